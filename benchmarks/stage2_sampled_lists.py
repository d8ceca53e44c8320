"""What stage-2 GRPO has to work with: the lists a reader *samples* for a question shown in both orders.

GRPO can only reinforce a list that a group samples. On the rows stage-2 training uses (`configs/
stage2_reader_question.yaml`: K = 2, one gold piece and the retriever's hardest negative, both orders), this samples
`--samples` completions per prompt at temperature 1 (as training does) and counts how often the first pick is gold
when gold is shown first and when it is shown second, and in how many prompts' groups gold-first and gold-second
lists both occur (the groups that carry a ranking signal). Questions from the training side of the run's split
(default: the shipped stage-2 run's). WebQA val records; captions stand in for pixels.

It also scores every completion with the training config's rewards (`--config`) and splits, reward by reward, the
first-order policy gradient on two directions: `position` (write [1] first, whatever the order) and `content`
(write the gold id first). For a policy P([1] first | order) = sigmoid(b + c*s), s = +1 when gold is shown first
and -1 when second, the gradient of the expected reward is sum_i w*r_i*(x_i - mean_prompt(x)) on b and the same
times s on c (x_i = 1 when completion i lists [1] first; completions without a usable list are left out). Any
group-centred advantage gives the same numbers, so they hold for `advantage_group: prompt` and `question` alike.

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


def reward_pulls(groups: list[list[str]], rows: list[dict], rewards_cfg) -> dict:
    """Per reward: mean by (where gold is shown, which id is listed first), and its pull on `position` and `content`
    (per completion; positive = towards writing [1] first / towards writing gold first)."""
    from mmrag_rft.rewards import make_reward_funcs
    from mmrag_rft.training.heldout import STAGE2_COLUMNS, listed_ids

    funcs, weights = make_reward_funcs(2, rewards_cfg)
    names = [getattr(f, "__name__", str(i)) for i, f in enumerate(funcs)]
    pull = {n: {"position": 0.0, "content": 0.0} for n in names + ["total"]}
    cells: dict[str, dict[str, list[float]]] = {}
    used = 0
    for row, outs in zip(rows, groups):
        cols = {k: [row[k]] * len(outs) for k in STAGE2_COLUMNS}
        per_func = [[w * v for v in f(outs, **cols)] for f, w in zip(funcs, weights)]
        firsts = [valid[0] if valid else None for _, valid in (listed_ids(o, row) for o in outs)]
        s = 1 if str(row["gold_ids"][0]) == "1" else -1
        shown = "gold shown first" if s == 1 else "gold shown second"
        usable = [i for i, f in enumerate(firsts) if f is not None]
        for i in usable:
            key = f"{shown}, lists [{firsts[i]}] first"
            for n, vals in zip(names, per_func):
                cells.setdefault(key, {}).setdefault(n, []).append(vals[i])
        if len(usable) < 2:
            continue
        x = {i: float(firsts[i] == "1") for i in usable}
        xbar = sum(x.values()) / len(usable)
        used += len(usable)
        for n, vals in zip(names, per_func):
            g = sum(vals[i] * (x[i] - xbar) for i in usable)
            pull[n]["position"] += g
            pull[n]["content"] += s * g
            pull["total"]["position"] += g
            pull["total"]["content"] += s * g
    return {
        "rewards": names, "completions_used": used,
        "pull_per_completion": {n: {k: v / max(1, used) for k, v in d.items()} for n, d in pull.items()},
        "mean_reward": {key: {n: sum(v) / len(v) for n, v in d.items()} | {"n": len(next(iter(d.values())))}
                        for key, d in sorted(cells.items())},
    }


def measure(backend, rows: list[dict], samples: int, max_new_tokens: int, seed: int, rewards_cfg) -> dict:
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
        "rewards": reward_pulls(groups, rows, rewards_cfg),
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
    ap.add_argument("--config", default="configs/stage2_reader_question.yaml",
                    help="training config whose `rewards` section scores the completions")
    ap.add_argument("--out", default=None)
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)

    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.examples import stage2_rows
    from mmrag_rft.training.negatives import retrieval_order

    rewards_cfg = load_train_config(args.config).rewards

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
        r = measure(common.load_policy(spec), rows, args.samples, args.max_new_tokens, args.seed, rewards_cfg)
        results[spec] = r
        fp = r["first_pick_gold"]
        print(f"{spec}: first pick gold {fp['gold shown first']:.2f} when gold is shown first, "
              f"{fp['gold shown second']:.2f} when second; groups with both kinds of list "
              f"{r['groups_with_both_kinds_of_list']:.2f}; questions with a gold-first list sampled in both orders "
              f"{r['questions_with_gold_first_sampled_in_every_order']:.2f} ({common.CAPTION_NOTE})", flush=True)
        print("  pull per completion (position: towards [1] first; content: towards gold first)")
        for name, d in r["rewards"]["pull_per_completion"].items():
            print(f"    {name:28s} position {d['position']:+.4f}  content {d['content']:+.4f}")
    path = common.write_result("stage2_sampled_lists", {
        "note": common.CAPTION_NOTE, "questions": len(train), "samples_per_prompt": args.samples,
        "temperature": 1.0, "rows": "K=2, one gold + the retriever's hardest negative, both orders (max_gold 1)",
        "rewards_config": args.config,
        "models": results}, args.out)
    print(f"wrote {path}")
    print(json.dumps({m: r["first_pick_gold"] for m, r in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
