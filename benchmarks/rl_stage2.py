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
    from mmrag_rft.prompts import ChatPrompt
    from mmrag_rft.rewards import make_answer_reward, make_ranking_reward, stage2_format_reward

    backend = HFBackend(model_dir, device="cpu", dtype="float32")
    t0 = time.time()
    prompts = [ChatPrompt(messages=r["prompt"][:-1], prefill=r["prefill"]) for r in rows]
    outs = [g[0] for g in backend.generate(prompts, max_new_tokens=max_new_tokens)]
    cols = {k: [r[k] for r in rows] for k in ("prefill", "num_candidates", "gold_ids", "answers", "category",
                                                 "dataset", "keywords")}
    fmt = stage2_format_reward(outs, **cols)
    strict = [v >= 0.999 for v in fmt]
    ndcg = make_ranking_reward("ndcg")(outs, **cols)
    acc = make_answer_reward("auto")(outs, **cols)
    n = len(rows)
    return {"format_reward": sum(fmt) / n, "strict_format_rate": sum(strict) / n, "ndcg": sum(ndcg) / n,
            "answer_acc": sum(acc) / n, "n": n, "eval_seconds": round(time.time() - t0, 1), "examples": outs[:3],
            "selection": selection_vs_chance(outs, rows), "outputs": outs}


def selection_vs_chance(outs: list[str], rows: list[dict]) -> dict:
    """Does the model pick and order evidence better than chance *given how many ids it lists*?

    A model that lists two of four candidates is not comparable with a full random permutation; the fair chance
    reference draws the same number of distinct in-range ids at random (exact expectation over every such list).
    Also: how often the first-listed id is gold, against the share of gold among the candidates (what a random
    first pick gets), and how often the first-listed id is the one shown first (position bias).
    """
    import itertools

    from mmrag_rft.parsing import parse_stage2
    from mmrag_rft.rewards import rank_score

    chance, first_gold, first_gold_chance, first_is_1, lens, n_ranked = 0.0, 0, 0.0, 0, [], 0
    for out, r in zip(outs, rows):
        k, gold = r["num_candidates"], [str(g) for g in r["gold_ids"]]
        ids = parse_stage2(out, prefill=r["prefill"], num_candidates=k).raw_ids
        valid = list(dict.fromkeys(i for i in ids if i.isdigit() and 1 <= int(i) <= k))
        if not valid:
            continue
        n_ranked += 1
        share = len(valid) / len(ids)  # rank_score's penalty for invalid or repeated ids, kept for the reference
        lists = list(itertools.permutations([str(i) for i in range(1, k + 1)], len(valid)))
        chance += share * sum(rank_score(list(p), gold, num_candidates=k) for p in lists) / len(lists)
        first_gold += valid[0] in gold
        first_gold_chance += len(set(gold)) / k
        first_is_1 += valid[0] == "1"
        lens.append(len(valid))
    n = max(1, n_ranked)
    return {"ranked": n_ranked, "ndcg_same_length_chance": chance / max(1, len(rows)),
            "first_is_gold": first_gold / n, "first_is_gold_chance": first_gold_chance / n,
            "first_is_prompt_first": first_is_1 / n, "mean_listed": sum(lens) / n}


def baselines(rows: list[dict]) -> dict:
    """Model-free references on the same held-out prompts: what NDCG and answer accuracy are worth without any
    judgement (the exact expectation over every full permutation; the prompt's own order; constant answers)."""
    import itertools

    from mmrag_rft.rewards import make_answer_reward, make_ranking_reward

    cols = {k: [r[k] for r in rows] for k in ("prefill", "num_candidates", "gold_ids", "answers", "category",
                                                 "dataset", "keywords")}
    ndcg, acc = make_ranking_reward("ndcg"), make_answer_reward("auto")

    def out(ids: list[int], answer: str = "x") -> str:
        return "</think><rank>" + " > ".join(f"[{i}]" for i in ids) + f"</rank><answer>{answer}</answer>"

    rand = 0.0
    for i, r in enumerate(rows):
        perms = list(itertools.permutations(range(1, r["num_candidates"] + 1)))
        one = {k: [v[i]] * len(perms) for k, v in cols.items()}
        rand += sum(ndcg([out(list(p)) for p in perms], **one)) / len(perms)
    n = len(rows)
    prompt_order = [out(list(range(1, r["num_candidates"] + 1))) for r in rows]
    return {"ndcg_random_permutation": rand / n, "ndcg_prompt_order": sum(ndcg(prompt_order, **cols)) / n,
            **{f"answer_acc_always_{a}": sum(acc([out([1], a)] * n, **cols)) / n for a in ("yes", "no")}}


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
    from mmrag_rft.training.examples import stage2_rows
    from mmrag_rft.models.loading import resolve_model_path as resolve_model
    from mmrag_rft.training.grpo import load_split, train
    from mmrag_rft.training.negatives import retrieval_order
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
    rows = stage2_rows(val, num_candidates=cfg.data.num_candidates, permutations=1, max_chars=cfg.data.max_chars,
                       seed=99, order_fn=retrieval_order)
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
