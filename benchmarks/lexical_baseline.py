"""A model-free reference for stage 1: how well plain word overlap with the question separates gold evidence
from distractors on the WebQA val records (captions stand in for pixels).

Score = share of the question's content words found in the candidate's title + text. Reports the AUC of that
score for gold vs each question's own (same-topic) distractors, and vs off-topic candidates drawn from other
questions, so a stage-1 model's AUC (benchmarks/rl_stage1.py) has something to be compared with.

    .venv/bin/python benchmarks/lexical_baseline.py
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STOP = set("the a an of in on is are was what which who how does do did to and for with at by from that this it "
           "as be or".split())


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP}


def overlap(question: str, cand) -> float:
    q = words(question)
    return len(q & words(f"{cand.title} {cand.text}")) / max(1, len(q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--off-topic-per-question", type=int, default=5)
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/lexical_baseline.json)")
    args = ap.parse_args(argv)

    from mmrag_rft.metrics.ranking import roc_auc

    samples = common.load_webqa(args.data)
    rng = random.Random(0)
    pool = [(s.qid, c) for s in samples for c in s.candidates]
    hard_s, hard_y, off_s, off_y = [], [], [], []
    for s in samples:
        gold = s.gold_set
        for c in s.candidates:
            hard_s.append(overlap(s.question, c))
            hard_y.append(c.id in gold)
            if c.id in gold:
                off_s.append(hard_s[-1])
                off_y.append(True)
        others = [c for qid, c in rng.sample(pool, 4 * args.off_topic_per_question) if qid != s.qid]
        for c in others[: args.off_topic_per_question]:
            off_s.append(overlap(s.question, c))
            off_y.append(False)
    res = {
        "note": common.CAPTION_NOTE, "data": args.data, "questions": len(samples),
        "score": "share of the question's content words in the candidate's title + text",
        "auc_gold_vs_own_distractors": roc_auc(hard_s, hard_y), "pairs_own": len(hard_y),
        "auc_gold_vs_off_topic": roc_auc(off_s, off_y), "pairs_off_topic": len(off_y),
    }
    path = common.write_result("lexical_baseline", res, args.out)
    print(f"word-overlap AUC: gold vs own distractors {res['auc_gold_vs_own_distractors']:.3f} "
          f"({res['pairs_own']} candidates), gold vs off-topic {res['auc_gold_vs_off_topic']:.3f} "
          f"({res['pairs_off_topic']}) ({common.CAPTION_NOTE})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
