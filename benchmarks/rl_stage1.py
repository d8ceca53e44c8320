"""Stage-1 RL on real WebQA records: held-out point-wise relevance before vs after (captions stand in for pixels).

Splits the shared WebQA val records by question, trains the CPU default model (SmolLM2-135M-Instruct + LoRA)
with configs/stage1_cpu.yaml for a bounded number of GRPO steps, and evaluates on the held-out questions:
- score mode: P(yes) >= 0.5 at the verdict position -> accuracy / F1, and the AUC of P(yes) (threshold-free:
  what the coarse filter can use), on the hard pairs (each question's own same-topic distractors) and on
  mixed pairs (half of the negatives off-topic, from other held-out questions, as in a corpus-wide pool);
- reason mode: greedy `<think>…</think><answer>` output -> shaped format reward, strict format rate, accuracy / F1;
for the base model, the format-warmed-up model (format only, random verdicts) and the RL-trained model.

    .venv/bin/python benchmarks/rl_stage1.py --steps 60
    .venv/bin/python benchmarks/rl_stage1.py --config configs/stage1_cpu_nothink.yaml --steps 50 \
        --name rl_stage1_nothink --output runs/bench_stage1_nothink      # the "no <think>" ablation
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


def score_metrics(backend, pairs, layout: str = "default") -> dict:
    from mmrag_rft.training.heldout import stage1_score_metrics

    return stage1_score_metrics(backend, pairs, layout)


def evaluate(model_dir: Path, pairs, *, reason_n: int, max_new_tokens: int, mixed_pairs=None,
             layout: str = "default") -> dict:
    from mmrag_rft.models.hf import HFBackend
    from mmrag_rft.training.heldout import evaluate_stage1

    return evaluate_stage1(HFBackend(model_dir, device="cpu", dtype="float32"), pairs, mixed_pairs,
                           reason_pairs=reason_n, max_new_tokens=max_new_tokens, layout=layout)


def heldout_pairs(val, per_question: int):
    from mmrag_rft.training.heldout import stage1_pairs

    return stage1_pairs(val, per_question)


def eval_checkpoints(args) -> int:
    """Held-out score mode of a run's saved checkpoints: where a run that later collapsed had got to."""
    from mmrag_rft.config import to_dict
    from mmrag_rft.models.loading import load_backend
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.checkpoints import checkpoints
    from mmrag_rft.training.grpo import load_split
    from mmrag_rft.training.run_log import read_log

    run = Path(args.output)
    cfg = load_train_config(run / "config.yaml")
    _, val = load_split(cfg)
    pairs, mixed = heldout_pairs(val, args.eval_pairs_per_question)
    rows = [r for r in read_log(run / "log.jsonl") if "step_time" in r]  # [] when the run has no log
    folders = {step: run / "warmup" if step == 0 else run / f"checkpoint-{step}" for step in [0, *args.checkpoints]}
    missing = [str(f) for f in folders.values() if not f.is_dir()]
    if missing:  # before any model is loaded, not after minutes of scoring the others
        raise SystemExit(f"no such folder: {', '.join(missing)} (checkpoints kept: "
                         f"{[p.name for p in checkpoints(run)]})")

    def last10(key: str, step: int) -> float | None:
        tail = [r.get(key, 0) for r in rows if r["step"] <= step][-10:]
        return round(sum(tail) / len(tail), 3) if tail else None

    points = []
    for step, path in folders.items():
        backend = load_backend(str(path), device="cpu", dtype="float32")
        hard = score_metrics(backend, pairs, cfg.data.layout)
        mix = score_metrics(backend, mixed, cfg.data.layout)
        points.append({"step": step, "model": str(path), "score_mode": hard, "score_mode_mixed": mix,
                       "train_accuracy_reward_last10": last10("rewards/stage1_accuracy_reward/mean", step),
                       "frac_reward_zero_std_last10": last10("frac_reward_zero_std", step)})
        print(f"step {step:4d}  AUC {hard['auc']:.3f} (mixed {mix['auc']:.3f})  acc {hard['accuracy']:.3f}  "
              f"P(yes) gold {hard['mean_p_yes_pos']:.2f} / other {hard['mean_p_yes_neg']:.2f}  ({NOTE})")
    out = common.write_result(args.name, {
        "note": NOTE, "run": str(run), "config": to_dict(cfg), "val_questions": len(val), "eval_pairs": len(pairs),
        "logged_steps": len(rows), "checkpoints": points})
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--config", default=str(ROOT / "configs/stage1_cpu.yaml"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--output", default=str(ROOT / "runs/bench_stage1"))
    ap.add_argument("--eval-pairs-per-question", type=int, default=4)
    ap.add_argument("--reason-eval", type=int, default=64, help="held-out pairs generated in reason mode")
    ap.add_argument("--reason-tokens", type=int, default=48, help="max new tokens of the reason-mode eval")
    ap.add_argument("--name", default="rl_stage1", help="results/NAME.json and docs/img/NAME.png")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--checkpoints", type=int, nargs="+", metavar="STEP",
                    help="no training: score-mode eval of these checkpoint-STEP folders of --output (and its "
                         "warm-up), e.g. the last ones before a run collapsed")
    args = ap.parse_args(argv)
    if args.checkpoints:
        return eval_checkpoints(args)

    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.models.loading import resolve_model_path as resolve_model
    from mmrag_rft.training.grpo import load_split, train
    from mmrag_rft.training.run_log import read_log
    from mmrag_rft.training.plot import plot_training

    cfg = load_train_config(args.config, [f"data.path={args.data}", f"grpo.max_steps={args.steps}",
                                          f"output_dir={args.output}", *args.overrides])
    _, val = load_split(cfg)
    pairs, mixed = heldout_pairs(val, args.eval_pairs_per_question)
    print(f"held-out: {len(val)} questions, {len(pairs)} (question, candidate) pairs ({NOTE})", file=sys.stderr)
    mct = args.reason_tokens

    before = evaluate(resolve_model(cfg.model.path), pairs, reason_n=args.reason_eval, max_new_tokens=mct,
                      mixed_pairs=mixed, layout=cfg.data.layout)
    print("before:", json.dumps(before["score_mode"]), json.dumps(before["reason_mode"]["format_reward"]),
          f"({NOTE})", file=sys.stderr)
    t0 = time.time()
    res = train(cfg, stage=1, resume=args.resume)
    train_s = time.time() - t0
    warm = evaluate(Path(args.output) / "warmup", pairs, reason_n=args.reason_eval, max_new_tokens=mct,
                    mixed_pairs=mixed, layout=cfg.data.layout) if cfg.warmup.enabled else None
    after = evaluate(Path(res.merged_dir), pairs, reason_n=args.reason_eval, max_new_tokens=mct, mixed_pairs=mixed,
                     layout=cfg.data.layout)

    rows = [r for r in read_log(res.log_path) if "train_runtime" not in r]
    zs = [r["frac_reward_zero_std"] for r in rows if r.get("frac_reward_zero_std") is not None]
    fr = [r.get("rewards/stage1_format_reward/mean") for r in rows]
    ac = [r.get("rewards/stage1_accuracy_reward/mean") for r in rows]
    k = max(1, len(rows) // 5)
    report = {
        "note": NOTE, "think": cfg.data.think, "layout": cfg.data.layout, "data": args.data, "model": cfg.model.path,
        "config": args.config, "overrides": args.overrides, "balanced_steps": cfg.data.balanced_steps,
        "learning_rate": cfg.grpo.learning_rate, "steps": res.global_step, "stopped_early": res.stopped_early,
        "train_examples": res.train_examples,
        "val_questions": len(val), "eval_pairs": len(pairs), "reason_eval_pairs": min(args.reason_eval, len(pairs)),
        "train_seconds": round(train_s, 1),
        "seconds_per_step": round(sum(r.get("step_time", 0) for r in rows) / max(1, len(rows)), 2),
        "frac_reward_zero_std_mean": round(sum(zs) / max(1, len(zs)), 3),
        "frac_reward_zero_std_last": zs[-1] if zs else None,
        "train_format_reward_first_steps": round(sum(fr[:k]) / k, 3) if fr else None,
        "train_format_reward_last_steps": round(sum(fr[-k:]) / k, 3) if fr else None,
        "train_accuracy_reward_first_steps": round(sum(ac[:k]) / k, 3) if ac else None,
        "train_accuracy_reward_last_steps": round(sum(ac[-k:]) / k, 3) if ac else None,
        "warmup": res.warmup, "before": before, "after_warmup": warm, "after_rl": after,
    }
    out = common.write_result(args.name, report)
    png = plot_training(res.output_dir, ROOT / f"docs/img/{args.name}.png",
                        title=f"stage 1 GRPO{'' if cfg.data.think else ' (no <think>)'}, SmolLM2-135M + LoRA, "
                              f"WebQA ({NOTE})")
    print(json.dumps({k: v for k, v in report.items() if k not in ("before", "after_warmup", "after_rl")}, indent=1))
    for name, r in (("before", before), ("after warm-up", warm), ("after RL", after)):
        if r:
            print(f"{name:14s} score-mode acc {r['score_mode']['accuracy']:.3f} F1 {r['score_mode']['f1']:.3f} "
                  f"AUC {r['score_mode']['auc']:.3f} (mixed negatives: AUC {r['score_mode_mixed']['auc']:.3f}) | "
                  f"reason-mode format {r['reason_mode']['format_reward']:.3f} acc {r['reason_mode']['accuracy']:.3f} "
                  f"F1 {r['reason_mode']['f1']:.3f}  ({NOTE})")
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
