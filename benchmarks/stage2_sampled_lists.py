"""What stage-2 GRPO has to work with: the lists a reader *samples* for a question shown in both orders.

GRPO can only reinforce a list that a group samples. On the rows stage-2 training uses (`configs/
stage2_reader_question.yaml`: K = 2, one gold piece and the retriever's hardest negative, both orders), this samples
`--samples` completions per prompt at temperature 1 (as training does) and counts how often the first pick is gold
when gold is shown first and when it is shown second, and in how many prompts' groups gold-first and gold-second
lists both occur (the groups that carry a ranking signal). Questions from the training side of the run's split
(default: the shipped stage-2 run's). WebQA val records; captions stand in for pixels.

    .venv/bin/python benchmarks/stage2_sampled_lists.py --threads 2 --questions 30 --samples 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def first_picks(outs: list[str], row: dict) -> list[bool | None]:
    """Per completion: is its first valid pick gold (None: no usable list)."""
    from mmrag_rft.training.heldout import listed_ids

    gold = {str(g) for g in row["gold_ids"]}
    return [valid[0] in gold if valid else None for _, valid in (listed_ids(out, row) for out in outs)]


def measure(backend, rows: list[dict], samples: int, max_new_tokens: int, seed: int) -> dict:
    from mmrag_rft.training.heldout import row_prompt

    prompts = [row_prompt(r) for r in rows]
    groups = []
    with common.progress() as bar:
        task = bar.add_task("sampling", total=len(prompts))
        for i, p in enumerate(prompts):
            groups.append(backend.generate([p], max_new_tokens=max_new_tokens, temperature=1.0,
                                           num_return_sequences=samples, seed=seed + i)[0])
            bar.advance(task)
    by_pos: dict[str, list[bool]] = {"gold shown first": [], "gold shown second": []}
    per_q: dict[str, list[list[bool | None]]] = {}
    mixed = 0
    for r, outs in zip(rows, groups):
        picks = first_picks(outs, r)
        pos = "gold shown first" if str(r["gold_ids"][0]) == "1" else "gold shown second"
        by_pos[pos] += [p for p in picks if p is not None]
        mixed += (True in picks) and (False in picks)
        per_q.setdefault(r["qid"], []).append(picks)
    both = [q for q, orders in per_q.items() if len(orders) > 1]
    return {
        "prompts": len(rows), "completions": len(rows) * samples,
        "usable_lists": sum(len(v) for v in by_pos.values()) / (len(rows) * samples),
        "first_pick_gold": {k: (sum(v) / len(v) if v else None) for k, v in by_pos.items()},
        "groups_with_both_kinds_of_list": mixed / len(rows),
        "questions_with_gold_first_sampled_in_every_order": sum(
            all(True in picks for picks in per_q[q]) for q in both) / max(1, len(both)),
        "examples": [outs[0] for outs in groups[:4]],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(common.WEBQA_RECORDS))
    ap.add_argument("--run", default=None, help="training run folder whose train side to use (default: the shipped "
                                                "stage-2 model's recorded split)")
    ap.add_argument("--model", action="append", default=None, help="repeatable (default: the released reader)")
    ap.add_argument("--questions", type=int, default=30)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)

    from mmrag_rft.training.examples import stage2_rows
    from mmrag_rft.training.negatives import retrieval_order

    samples = common.load_webqa(args.data)
    if args.run:
        train = common.run_side(samples, args.run, side="train")
    else:
        from mmrag_rft.evaluation.evaluate import split_qids

        keep = split_qids("reader", "train")
        train = [s for s in samples if s.qid in keep]
    train = [s for s in train if set(s.gold_ids) & {c.id for c in s.candidates}][: args.questions]
    rows = stage2_rows(train, num_candidates=2, permutations=2, max_chars=200, seed=0, order_fn=retrieval_order,
                       max_gold=1)
    models = args.model or ["qwen2.5-coder-0.5b"]
    results = {}
    for spec in models:
        r = measure(common.load_policy(spec), rows, args.samples, args.max_new_tokens, args.seed)
        results[spec] = r
        fp = r["first_pick_gold"]
        print(f"{spec}: first pick gold {fp['gold shown first']:.2f} when gold is shown first, "
              f"{fp['gold shown second']:.2f} when second; groups with both kinds of list "
              f"{r['groups_with_both_kinds_of_list']:.2f}; questions with a gold-first list sampled in both orders "
              f"{r['questions_with_gold_first_sampled_in_every_order']:.2f} ({common.CAPTION_NOTE})", flush=True)
    path = common.write_result("stage2_sampled_lists", {
        "note": common.CAPTION_NOTE, "questions": len(train), "samples_per_prompt": args.samples,
        "temperature": 1.0, "rows": "K=2, one gold + the retriever's hardest negative, both orders (max_gold 1)",
        "models": results}, args.out)
    print(f"wrote {path}")
    print(json.dumps({m: r["first_pick_gold"] for m, r in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
