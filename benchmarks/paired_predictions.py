"""Two systems' predictions on the same questions, compared question by question: QA-Acc and evidence F1 of each,
how many questions each does better on, a paired bootstrap 95% interval of the difference (B - A) in the answer
score (`--metric answer`: WebQA QA-Acc, MMQA list F1) or in evidence F1 (`--metric evidence`), and how often each
wrote a usable <rank> list (and how often that list is just the filter's order).

  python benchmarks/paired_predictions.py runs/ablate_minilm/shipped runs/recipe2/ablate/trained_reader \
      --names shipped reproduced --out benchmarks/results/recipe_stage2_reproduction.json
  python benchmarks/paired_predictions.py runs/ablate_mmqa_img/retriever_topk runs/ablate_mmqa_img/shipped \
      --names retriever_topk shipped --dataset mmqa --metric evidence --out benchmarks/results/...json

Each argument is an `mmrag evaluate` / `mmrag ablate` system folder (its predictions.jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bootstrap_95  # noqa: E402

from mmrag_rft.config import atomic_write_text  # noqa: E402
from mmrag_rft.evaluation.ablate import row_numbers  # noqa: E402
from mmrag_rft.evaluation.evaluate import CAPTION_NOTE, score_rows  # noqa: E402
from mmrag_rft.evaluation.runner import read_predictions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--names", nargs=2, default=["a", "b"])
    ap.add_argument("--dataset", default="webqa")
    ap.add_argument("--metric", choices=["answer", "evidence"], default="answer", help="what the paired interval is of")
    ap.add_argument("--resamples", type=int, default=5000)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    preds = [read_predictions(d / "predictions.jsonl") for d in (args.a, args.b)]
    qids = sorted(set(preds[0]) & set(preds[1]))
    rows = [[p[q] for q in qids] for p in preds]
    metrics = [score_rows(r, dataset=args.dataset) for r in rows]
    score_a, score_b = (m["per_question_acc" if args.metric == "answer" else "per_question_retrieval_f1"]
                        for m in metrics)
    diff = [y - x for x, y in zip(score_a, score_b)]
    lo, hi = bootstrap_95(diff, args.resamples)
    usable = [[r for r in rs if r.get("stage2_rank")] for rs in rows]
    a, b = args.names
    nums = [row_numbers(m, r) for m, r in zip(metrics, rows)]
    answer_key = "qa_acc" if "qa_acc" in nums[0] else "list_f1"
    out = {"benchmark": "paired_predictions", "note": f"{args.note}; {CAPTION_NOTE}".lstrip("; "),
           "systems": {a: str(args.a), b: str(args.b)}, "questions": len(qids),
           answer_key: {n: x[answer_key] for n, x in zip(args.names, nums)},
           "evidence_f1": {n: x["retrieval_f1"] for n, x in zip(args.names, nums)},
           "paired": {"metric": args.metric, f"{b}_better": sum(d > 0 for d in diff),
                      f"{b}_worse": sum(d < 0 for d in diff),
                      f"{b}_minus_{a}_bootstrap_95": [lo, hi]},
           "rank_usable": {n: len(u) for n, u in zip(args.names, usable)},
           "rank_equals_filter_order_when_usable": {n: sum(r["stage2_rank"] == r["kept_ids"] for r in u)
                                                    for n, u in zip(args.names, usable)}}
    atomic_write_text(args.out, json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
