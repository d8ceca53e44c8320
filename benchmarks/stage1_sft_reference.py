"""A supervised reference for stage-1 RL: the same LoRA, the same training prompts, the gold verdict as target.

Not part of the method (the method never trains on gold verdicts outside the RL reward). It answers one question:
with the number of labelled prompts a CPU RL run sees (about 280), can this adapter learn a relevance read-out at
all when every example says directly what is right? If yes and RL does not, RL's one-bit-per-sample signal is
the limit at this scale; if neither does, the limit is the data and the model. Held-out evaluation is exactly
rl_stage1.py's (same split, same hard and mixed pairs, score mode). WebQA val records; captions stand in for
pixels.

    .venv/bin/python benchmarks/stage1_sft_reference.py --config configs/stage1_cpu_nothink_top8.yaml --examples 280
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from mmrag_rft.training.heldout import stage1_pairs as heldout_pairs  # noqa: E402
from mmrag_rft.training.heldout import stage1_score_metrics as score_metrics  # noqa: E402

NOTE = "captions stand in for pixels"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--config", default=str(common.ROOT / "configs/stage1_cpu_nothink_top8.yaml"))
    ap.add_argument("--examples", type=int, default=280, help="labelled training prompts (one pass)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=None, help="default: the config's grpo.learning_rate")
    ap.add_argument("--eval-pairs-per-question", type=int, default=4)
    ap.add_argument("--name", default="stage1_sft_reference")
    ap.add_argument("--save", default=None, help="also save the merged model here (e.g. for filter_sweep.py --model)")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)

    import torch
    from peft import LoraConfig, get_peft_model

    from mmrag_rft.models.hf import HFBackend
    from mmrag_rft.models.loading import load_for_training
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import build_rows, load_split
    from mmrag_rft.training.lora import adapted_layers, lora_target
    from mmrag_rft.training.warmup import completion_batch

    cfg = load_train_config(args.config, [f"data.path={args.data}", *args.overrides])
    if cfg.data.think:
        raise SystemExit("use a verdict-only config (data.think: false): the target is the verdict alone")
    train_s, val = load_split(cfg)
    rows = build_rows(cfg, 1, train_s, with_pixels=False)
    random.Random(cfg.data.seed).shuffle(rows)
    rows = rows[: args.examples]
    pairs, mixed = heldout_pairs(val, args.eval_pairs_per_question)
    model, tok = load_for_training(cfg.model.path)
    lr = args.lr or cfg.grpo.learning_rate

    def evaluate() -> dict:
        model.eval()
        backend = HFBackend(model, processor=tok, device="cpu", dtype="float32")
        out = {"hard": score_metrics(backend, pairs, cfg.data.layout),
               "mixed": score_metrics(backend, mixed, cfg.data.layout)}
        model.train()
        return out

    before = evaluate()
    layers = adapted_layers(model, cfg.lora.top_layers)
    torch.manual_seed(cfg.grpo.seed)
    model = get_peft_model(model, LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, task_type="CAUSAL_LM",
        target_modules=lora_target(cfg.lora.target_modules, False, True, layers)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    losses, t0 = [], time.time()
    model.train()
    with common.progress() as bar:
        task = bar.add_task("supervised verdicts", total=len(rows))
        for i in range(0, len(rows), args.batch_size):
            batch = rows[i:i + args.batch_size]
            input_ids, attn, lab = completion_batch(tok, [(list(r["prompt"]), f"{r['label']}</answer>") for r in batch])
            loss = model(input_ids=input_ids, attention_mask=attn, labels=lab).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.detach()))
            bar.advance(task, len(batch))
    train_seconds = time.time() - t0
    after = evaluate()
    if args.save:
        from mmrag_rft.config import replacing_dir

        with replacing_dir(args.save) as tmp:
            model.merge_and_unload().save_pretrained(tmp)
            tok.save_pretrained(tmp)

    rows_t = [[name, r["hard"]["auc"], r["mixed"]["auc"], r["hard"]["accuracy"], r["hard"]["mean_p_yes_pos"],
               r["hard"]["mean_p_yes_neg"]] for name, r in (("before", before), ("after supervised", after))]
    common.print_table(
        f"Supervised reference: {len(rows)} gold-verdict prompts, LoRA as {Path(args.config).name}, lr {lr:g} "
        f"(held-out {len(val)} questions; {NOTE})",
        ["model", "AUC hard", "AUC mixed", "acc hard", "P(yes) gold", "P(yes) neg"], rows_t)
    path = common.write_result(args.name, {
        "note": NOTE, "config": args.config, "overrides": args.overrides, "examples": len(rows),
        "batch_size": args.batch_size, "learning_rate": lr, "saved_to": args.save, "lora_top_layers": cfg.lora.top_layers,
        "val_questions": len(val), "eval_pairs": len(pairs), "train_seconds": round(train_seconds, 1),
        "loss_first10": sum(losses[:10]) / max(1, len(losses[:10])),
        "loss_last10": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "before": before, "after": after,
        "targets": "gold verdicts (a reference only; the method's warm-up never sees gold labels)",
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
