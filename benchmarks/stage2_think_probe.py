"""Does reasoning that quotes the candidates help the shipped reader answer?

The shipped stage-2 reader's `<think>` mostly restates the question, and GRPO runs that rewarded reasoning grounded
in the candidates traded answers for it (benchmarks/results/HISTORY.md). This probe asks what grounded reasoning is
worth to the answers on these questions, with no training: the same shipped pipeline (trained stage 1's fused top 2,
the trained reader) on the same held-out questions, once as shipped (the reader writes its own reasoning) and once
with the reasoning written for it: for each candidate in prompt order, its `--window`-word stretch sharing the most
content words with the question (`[1] ...; [2] ...`), prefilled before `</think>`, the reader then writing its
`<rank>` and `<answer>`. No gold is used to build that reasoning. WebQA val records; captions stand in for pixels.

    .venv/bin/python benchmarks/stage2_think_probe.py --out runs/think_probe

Each arm is a resumable `mmrag ablate`-style run in OUT/<arm>; the result goes to
benchmarks/results/stage2_think_probe.json (both arms' numbers and the paired per-question comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def quoted_window(question: str, text: str, width: int) -> str:
    """The `width`-word stretch of `text` sharing the most content words with the question (the first on ties)."""
    from mmrag_rft.rewards import content_words

    q = content_words(question)
    words = text.split()
    best, best_i = -1, 0
    for i in range(max(1, len(words) - width + 1)):
        shared = len(content_words(" ".join(words[i:i + width])) & q)
        if shared > best:
            best, best_i = shared, i
    return " ".join(words[best_i:best_i + width]).strip(" .,;:")


def quote_candidates(width: int) -> None:
    """From here on, every stage-2 prompt arrives with its reasoning written: each candidate's quoted window."""
    from mmrag_rft import prompts

    original = prompts.stage2_prompt

    def with_quotes(question, candidates, **kw):
        p = original(question, candidates, **kw)
        quotes = "; ".join(f"[{i}] {quoted_window(question, t, width)}" for i, t in
                           enumerate(p.meta.get("evidence") or [], 1))
        p.prefill = f"{p.prefill}{quotes}.</think>"
        return p

    prompts.stage2_prompt = with_quotes  # Pipeline.answer imports it from the module at call time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--out", type=Path, default=Path("runs/think_probe"))
    ap.add_argument("--window", type=int, default=12)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--name", default="stage2_think_probe")
    common.add_threads_flag(ap)
    args = ap.parse_args()
    common.set_threads(args.threads)

    from mmrag_rft.evaluation.ablate import System, run_ablation
    from mmrag_rft.evaluation.evaluate import CAPTION_NOTE, score_rows
    from mmrag_rft.evaluation.runner import read_predictions
    from mmrag_rft.models.loading import load_backend

    arms = {"generated": "as shipped: the reader writes its own reasoning",
            "quoted": f"the reasoning written for it: each candidate's {args.window}-word stretch most like the question"}
    rows = {}
    for arm, description in arms.items():
        if arm == "quoted":
            quote_candidates(args.window)
        summary = run_ablation(args.data, dataset="webqa", out_dir=args.out / arm, heldout="default",
                               limit=args.limit, systems=[System("shipped", description, "default")],
                               load=lambda m: load_backend(m))
        rows[arm] = {"description": description, **summary["systems"]["shipped"]}
    preds = {a: read_predictions(args.out / a / "shipped" / "predictions.jsonl") for a in arms}
    qids = sorted(set(preds["generated"]) & set(preds["quoted"]))
    per_q = {a: score_rows([preds[a][q] for q in qids], dataset="webqa")["per_question_acc"] for a in arms}
    diff = [b - a for a, b in zip(per_q["generated"], per_q["quoted"])]
    payload = {"benchmark": "stage2_think_probe", "questions": len(qids), "window": args.window,
               "note": f"held-out questions of the shipped models; {CAPTION_NOTE}", "arms": rows,
               "paired": {"quoted_better": sum(d > 0 for d in diff), "quoted_worse": sum(d < 0 for d in diff),
                          "quoted_minus_generated_qa_acc_bootstrap_95": list(common.bootstrap_95(diff))}}
    path = common.write_result(args.name, payload)
    common.print_table(f"{len(qids)} held-out WebQA questions ({CAPTION_NOTE})",
                       ["reasoning", "QA-Acc", "evidence F1", "reasoning grounded", "s / question"],
                       [[a, r["qa_acc"], r["retrieval_f1"], r["reasoning_grounding"], r["s_per_question"]]
                        for a, r in rows.items()])
    print(f"paired: quoted better on {payload['paired']['quoted_better']}, worse on {payload['paired']['quoted_worse']}"
          f"; wrote {path}")


if __name__ == "__main__":
    main()
