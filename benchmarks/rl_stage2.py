"""Stage-2 RL on real WebQA records: held-out list-wise ranking + answer before vs after (captions stand in for pixels).

Splits the shared WebQA val records by question (the same hash split as stage 1), builds K-candidate prompts
(gold + hardest negatives), trains the CPU default model with configs/stage2_cpu.yaml from `--init` (a stage-1
run; default: the stage-1 benchmark's run) and reports on held-out questions, greedy decoding:
format reward (shaped), strict format rate, NDCG of the <rank> list, WebQA QA-Acc of the <answer>.

    .venv/bin/python benchmarks/rl_stage2.py --init runs/bench_stage1 --steps 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

ROOT = common.ROOT
NOTE = common.CAPTION_NOTE


def evaluate(model_dir: Path, rows: list[dict], *, max_new_tokens: int) -> dict:
    from mmrag_rft.models.hf import HFBackend
    from mmrag_rft.training.heldout import evaluate_stage2

    return evaluate_stage2(HFBackend(model_dir, device="cpu", dtype="float32"), rows, max_new_tokens=max_new_tokens)


def baselines(rows: list[dict]) -> dict:
    from mmrag_rft.training.heldout import stage2_baselines

    return stage2_baselines(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--config", default=str(ROOT / "configs/stage2_cpu.yaml"))
    ap.add_argument("--init", default=str(ROOT / "runs/bench_stage1"), help="stage-1 run folder or model folder")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--output", default=str(ROOT / "runs/bench_stage2"))
    ap.add_argument("--eval-questions", type=int, default=40)
    ap.add_argument("--name", default="rl_stage2", help="results/NAME.json and docs/img/NAME.png")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args(argv)

    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.heldout import stage2_prompts
    from mmrag_rft.models.loading import resolve_model_path as resolve_model
    from mmrag_rft.training.grpo import load_split, train
    from mmrag_rft.training.run_log import read_log
    from mmrag_rft.training.plot import plot_training

    init = args.init if Path(args.init).exists() else None
    if init is None:
        print(f"--init {args.init} not found: stage 2 starts from the base model", file=sys.stderr)
    ovs = [f"data.path={args.data}", f"grpo.max_steps={args.steps}", f"output_dir={args.output}", *args.overrides]
    if init is None:
        ovs.append("data.negatives=retrieval")
    cfg = load_train_config(args.config, ovs)
    _, val = load_split(cfg)
    val = val[: args.eval_questions]
    # held-out prompts: retrieval-ordered hardest negatives (no stage-1 model needed to evaluate)
    rows = stage2_prompts(val, num_candidates=cfg.data.num_candidates, max_chars=cfg.data.max_chars)
    print(f"held-out: {len(val)} questions, K={cfg.data.num_candidates} ({NOTE})", file=sys.stderr)
    mct = cfg.grpo.max_completion_length
    start = resolve_model(init) if init else resolve_model(cfg.model.path)
    before = evaluate(Path(start), rows, max_new_tokens=mct)
    brief = {k: v for k, v in before.items() if k not in ("examples", "outputs")}
    print("before:", json.dumps(brief), f"({NOTE})", file=sys.stderr)
    t0 = time.time()
    res = train(cfg, stage=2, init=init, resume=args.resume)
    train_s = time.time() - t0
    warm = evaluate(Path(args.output) / "warmup", rows, max_new_tokens=mct) if cfg.warmup.enabled else None
    after = evaluate(Path(res.merged_dir), rows, max_new_tokens=mct)

    logs = [r for r in read_log(res.log_path) if "train_runtime" not in r]
    zs = [r["frac_reward_zero_std"] for r in logs if r.get("frac_reward_zero_std") is not None]
    report = {
        "note": NOTE, "data": args.data, "init": init, "config": args.config,
        "steps": res.global_step, "stopped_early": res.stopped_early, "train_examples": res.train_examples,
        "val_questions": len(val),
        "train_seconds": round(train_s, 1),
        "seconds_per_step": round(sum(r.get("step_time", 0) for r in logs) / max(1, len(logs)), 2),
        "frac_reward_zero_std_mean": round(sum(zs) / max(1, len(zs)), 3),
        "warmup": res.warmup, "baselines": baselines(rows), "before": before, "after_warmup": warm, "after_rl": after,
    }
    out = common.write_result(args.name, report)
    png = plot_training(res.output_dir, ROOT / f"docs/img/{args.name}.png",
                        title=f"stage 2 GRPO, SmolLM2-135M + LoRA, WebQA ({NOTE})")
    for name, r in (("before", before), ("after warm-up", warm), ("after RL", after)):
        if not r:
            continue
        print(f"{name:14s} format {r['format_reward']:.3f} strict {r['strict_format_rate']:.3f} NDCG {r['ndcg']:.3f} "
              f"answer acc {r['answer_acc']:.3f}  (NDCG of random lists as long as the model's: "
              f"{r['selection']['ndcg_same_length_chance']:.3f}; {NOTE})")
    print("model-free baselines on the same prompts:", json.dumps(report["baselines"]))
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
