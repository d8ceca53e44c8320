"""Does the untrained policy see relevance at all? Zero-shot AUC of P(yes) for several stage-1 prompt layouts.

GRPO sharpens what a policy can already do; it rarely creates an ability from nothing. If P(yes) at the verdict
position carries no signal (AUC ~0.5 even against off-topic evidence), RL has no foothold. This probe scores the
same (question, candidate) pairs under each stage-1 layout (`prompts.STAGE1_LAYOUTS`) and reports the AUC of
P(yes) for gold vs each question's own distractors and vs off-topic candidates from other questions, next to
the word-overlap reference of benchmarks/lexical_baseline.py. WebQA val records; captions stand in for pixels.

    .venv/bin/python benchmarks/stage1_prompt_probe.py --questions 60
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NOTE = "captions stand in for pixels"


def build_pairs(samples, n_questions: int, own_neg: int, off_neg: int, seed: int):
    """Per question: its gold candidates, `own_neg` same-topic distractors, `off_neg` candidates of other questions."""
    rng = random.Random(seed)
    samples = [s for s in samples if s.gold_ids and len(s.candidates) > len(s.gold_ids)]
    rng.shuffle(samples)
    chosen = samples[:n_questions]
    pool = [c for s in samples[n_questions:] for c in s.candidates]
    groups = []
    for s in chosen:
        gold = [c for c in s.candidates if c.id in s.gold_ids]
        neg = [c for c in s.candidates if c.id not in s.gold_ids]
        rng.shuffle(neg)
        groups.append((s.question, gold, neg[:own_neg], rng.sample(pool, off_neg)))
    return groups


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--model", default="default", help="'default' or a (trained) model folder")
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--own-neg", type=int, default=4)
    ap.add_argument("--off-neg", type=int, default=2)
    ap.add_argument("--layouts", default=None, help="comma-separated subset of prompts.STAGE1_LAYOUTS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)

    from mmrag_rft.metrics.ranking import roc_auc
    from mmrag_rft.prompts import STAGE1_LAYOUTS, stage1_prompt

    layouts = args.layouts.split(",") if args.layouts else list(STAGE1_LAYOUTS)
    groups = build_pairs(common.load_webqa(args.data), args.questions, args.own_neg, args.off_neg, args.seed)
    backend = common.load_policy(args.model)
    results = {}
    for layout in layouts:
        t0 = time.time()
        p_gold, p_own, p_off = [], [], []
        with common.progress() as bar:
            task = bar.add_task(f"layout {layout}", total=len(groups))
            for q, gold, own, off in groups:
                cands = gold + own + off
                p = backend.score_yes_no([stage1_prompt(q, c, style="score", layout=layout) for c in cands])
                p_gold += p[: len(gold)]
                p_own += p[len(gold): len(gold) + len(own)]
                p_off += p[len(gold) + len(own):]
                bar.advance(task)
        n = len(p_gold) + len(p_own) + len(p_off)
        results[layout] = {
            "auc_gold_vs_own_distractors": roc_auc(p_gold + p_own, [True] * len(p_gold) + [False] * len(p_own)),
            "auc_gold_vs_off_topic": roc_auc(p_gold + p_off, [True] * len(p_gold) + [False] * len(p_off)),
            "mean_p_yes_gold": sum(p_gold) / len(p_gold),
            "mean_p_yes_own": sum(p_own) / len(p_own),
            "mean_p_yes_off": sum(p_off) / len(p_off),
            "candidates": n,
            "seconds": time.time() - t0,
        }
    common.print_table(
        f"Zero-shot stage-1 P(yes) by prompt layout ({len(groups)} WebQA questions; {NOTE})",
        ["layout", "AUC own", "AUC off-topic", "P(yes) gold", "P(yes) own", "P(yes) off", "s"],
        [[k, v["auc_gold_vs_own_distractors"], v["auc_gold_vs_off_topic"], v["mean_p_yes_gold"],
          v["mean_p_yes_own"], v["mean_p_yes_off"], v["seconds"]] for k, v in results.items()])
    path = common.write_result("stage1_prompt_probe", {
        "note": NOTE, "model": args.model, "questions": len(groups), "own_neg": args.own_neg,
        "off_neg": args.off_neg, "seed": args.seed, "layouts": results,
        "reference": "benchmarks/results/lexical_baseline.json (word overlap)",
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
