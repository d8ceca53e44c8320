"""Whose first pick is gold, question by question, in one `mmrag ablate` system folder: the filter's order the reader
received (`kept_ids`), stage 2's ranking (`stage2_rank`, e.g. `stage2_ranking: consistent`) and the `<rank>` list it
wrote (`stage2_written`, the filter's order where unusable); where stage 2's ranking changed the filter's first
pick, whether that fixed a miss, demoted a gold pick, or swapped two pieces of the same kind.

  python benchmarks/stage2_first_picks.py runs/ablate_seed2/seed2 \
      --out benchmarks/results/stage2_first_picks_multi_seed2.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmrag_rft.config import atomic_write_text
from mmrag_rft.evaluation.runner import read_predictions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("system", type=Path, help="an ablate system folder (its predictions.jsonl)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = [r for r in read_predictions(args.system / "predictions.jsonl").values() if r.get("kept_ids")]
    if not rows:
        raise SystemExit(f"{args.system}/predictions.jsonl: no predictions with survivors")

    def gold_first(ids: list[str], r: dict) -> bool:
        return bool(ids) and ids[0] in r["gold_ids"]

    lists = {"filter": lambda r: r["kept_ids"], "stage2_rank": lambda r: r.get("stage2_rank") or r["kept_ids"],
             "written": lambda r: r.get("stage2_written") or r["kept_ids"]}
    changed = [r for r in rows if lists["stage2_rank"](r)[0] != r["kept_ids"][0]]
    doc = {"system": str(args.system), "questions": len(rows), "note": "captions stand in for pixels",
           "first_pick_gold": {name: sum(gold_first(f(r), r) for r in rows) for name, f in lists.items()},
           "stage2_rank_held": sum("stage2_first_pick" not in (r.get("bypassed") or {}) for r in rows),
           "first_pick_changed": {
               "total": len(changed),
               "fixed": sum(gold_first(lists["stage2_rank"](r), r) and not gold_first(r["kept_ids"], r) for r in changed),
               "demoted": sum(gold_first(r["kept_ids"], r) and not gold_first(lists["stage2_rank"](r), r) for r in changed),
           },
           "fixable": sum(not gold_first(r["kept_ids"], r) and any(i in r["gold_ids"] for i in r["kept_ids"][1:])
                          for r in rows)}
    doc["first_pick_changed"]["same_kind"] = (doc["first_pick_changed"]["total"] - doc["first_pick_changed"]["fixed"]
                                              - doc["first_pick_changed"]["demoted"])
    print(json.dumps(doc, indent=2))
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
