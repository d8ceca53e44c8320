"""What a modality rule alone gets: the retriever's top 2 *image* candidates, next to the sources a system cited.

Every gold piece of the WebQA val records is an image, so "cite the retriever's best images" is a rule that knows
the dataset rather than the question. A stage-1 model that sees each candidate's modality can learn that rule
(benchmarks/stage1_modality_probe.py); this script measures, from `mmrag ablate` / `mmrag evaluate` predictions
(their judgements carry every candidate's retrieval rank), how far the cited sources get beyond it. No model is
loaded. Captions stand in for pixels.

    .venv/bin/python benchmarks/modality_rule.py shipped=runs/ablate/shipped unlabelled=runs/ablate_unlabelled/shipped
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("systems", nargs="+", help="NAME=FOLDER: a system folder with predictions.jsonl")
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--sources", type=int, default=2)
    ap.add_argument("--name", default="modality_rule")
    args = ap.parse_args(argv)

    from mmrag_rft.evaluation.runner import read_predictions
    from mmrag_rft.metrics.ranking import ndcg_at_k, set_prf

    samples = {s.qid: s for s in common.load_webqa(args.data)}
    k = args.sources
    rule_name = f"the retriever's top {k} images (modality rule)"

    def row(label: str, vals: list[tuple[float, float, bool]]) -> list:
        return [label, len(vals), *(sum(v[i] for v in vals) / len(vals) for i in range(3))]

    rows, per_question, qids = [], {}, None
    for spec in args.systems:
        name, _, folder = spec.partition("=")
        preds = read_predictions(Path(folder) / "predictions.jsonl")
        if not name or not preds:
            raise SystemExit(f"{spec!r}: give NAME=FOLDER, a folder with an ablate or evaluate predictions.jsonl")
        if qids is None:
            qids = sorted(preds)
        elif sorted(preds) != qids:
            raise SystemExit(f"{folder}: not the same questions as {args.systems[0]}")
        cited, retr, images = [], [], []
        for q in qids:
            p, s = preds[q], samples[q]
            modality = {c.id: c.modality for c in s.candidates}
            by_rank = [j["id"] for j in sorted((j for j in p["judgements"] if j.get("retrieval_rank") is not None),
                                               key=lambda j: j["retrieval_rank"])]
            for out, ranked in ((cited, p["rank"]), (retr, by_rank),
                                (images, [i for i in by_rank if modality.get(i) == "image"])):
                out.append((set_prf(ranked[:k], s.gold_ids)[2], ndcg_at_k(ranked[:k], s.gold_ids, 5),
                            bool(ranked) and ranked[0] in s.gold_ids))
        if not rows:  # the same pools and retriever for every system: its rows once
            per_question[rule_name] = images
            rows += [row(f"the retriever's top {k}", retr), row(rule_name, images)]
        per_question[name] = cited
        rows.append(row(f"{name}: its cited sources", cited))
    rule = per_question[rule_name]
    paired = {}
    for name in (s.partition("=")[0] for s in args.systems):
        diff = [a[0] - b[0] for a, b in zip(per_question[name], rule)]
        paired[name] = {"better": sum(d > 0 for d in diff), "worse": sum(d < 0 for d in diff),
                        "evidence_f1_minus_rule_ci95": common.bootstrap_95(diff)}
    common.print_table(f"evidence on {len(qids)} questions ({common.CAPTION_NOTE})",
                       ["sources", "n", f"evidence F1 (top {k})", f"NDCG@5 of the {k} cited", "first is gold"], rows)
    for name, v in paired.items():
        lo, hi = v["evidence_f1_minus_rule_ci95"]
        print(f"{name} vs the modality rule: better on {v['better']}, worse on {v['worse']}, "
              f"evidence-F1 difference 95% interval {lo:+.3f} to {hi:+.3f}")
    path = common.write_result(args.name, {
        "note": common.CAPTION_NOTE, "questions": len(qids),
        "systems": dict(s.partition("=")[::2] for s in args.systems),
        "rows": [dict(zip(("sources", "n", "evidence_f1", "ndcg@5", "first_gold"), r)) for r in rows],
        "paired_with_rule": paired})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
