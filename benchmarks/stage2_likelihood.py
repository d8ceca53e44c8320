"""Does stage 2's likelihood ranking (`stage2_ranking: likelihood`) rank better than what it would replace?

Two settings, on the WebQA val questions the shipped models never trained on (captions stand in for pixels):

- pipeline: the shipped stage 1 and filter (fused, threshold 0) keep the top K of each question's own pool, in the
  filter's order; each reader ranks those survivors by `listwise.likelihood_ranking`. Compared with the filter's
  own order on first-pick precision, NDCG@K and the F1 of the top 2, plus Borda fusion of both orders (ties to the
  filter). `headroom` counts the questions where the filter's first pick is wrong but a gold piece survived: the
  most any re-ranking of the survivors can fix.
- shuffled: gold + the retriever's hardest negatives, shuffled (`training.heldout.stage2_prompts`, as
  `mmrag train eval`): the likelihood ranking's first pick against chance, next to the written `<rank>` list.

`--dataset mmqa` runs the pipeline setting on the MMQA dev questions with gold among their candidates (the image
questions: titles stand in for images; no model here trained on MMQA, so every question is held out).

    .venv/bin/python benchmarks/stage2_likelihood.py --threads 2
    .venv/bin/python benchmarks/stage2_likelihood.py --threads 2 --dataset mmqa --limit 200 --shuffled-questions 0 \
        --name stage2_likelihood_mmqa
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def borda(filter_order: list[str], model_order: list[str]) -> list[str]:
    return sorted(filter_order, key=lambda c: (filter_order.index(c) + model_order.index(c), filter_order.index(c)))


def order_metrics(orders: list[list[str]], golds: list[set[str]]) -> dict[str, float]:
    from mmrag_rft.metrics.ranking import ndcg_at_k, set_prf

    n = max(1, len(orders))
    return {"first_is_gold": sum(bool(o) and o[0] in g for o, g in zip(orders, golds)) / n,
            "ndcg": sum(ndcg_at_k(o, g, len(o)) for o, g in zip(orders, golds)) / n,
            "top2_f1": sum(set_prf(o[:2], g)[2] for o, g in zip(orders, golds)) / n}


def pipeline_setting(val: list, readers: dict, k: int) -> dict:
    from mmrag_rft.listwise import likelihood_ranking
    from mmrag_rft.pipeline import Pipeline, pipeline_config

    cfg = pipeline_config("default")
    cfg.filter.top_k = k
    pipe = Pipeline(common.load_policy("default"), config=cfg)
    records = []
    with common.progress() as bar:
        task = bar.add_task(f"pipeline, top {k}", total=len(val))
        for s in val:
            retrieved = pipe.retrieve(s.question, candidates=s.candidates)
            kept = pipe.coarse_filter(pipe.judge(s.question, retrieved))
            by_id = {c.id: c for c, _ in retrieved}
            rec = {"qid": s.qid, "gold": sorted(s.gold_ids), "filter": kept, "readers": {}}
            for name, be in readers.items():
                ranked = likelihood_ranking(be, s.question, [by_id[i] for i in kept])
                rec["readers"][name] = {"order": [i for i, _ in ranked], "scores": dict(ranked)}
            records.append(rec)
            bar.advance(task)
    golds = [set(r["gold"]) for r in records]
    systems = {"filter order": [r["filter"] for r in records]}
    for name in readers:
        systems[f"{name} likelihood"] = [r["readers"][name]["order"] for r in records]
        systems[f"{name} likelihood + filter (Borda)"] = [borda(r["filter"], r["readers"][name]["order"])
                                                          for r in records]
    headroom = sum(bool(r["filter"]) and r["filter"][0] not in r["gold"] and bool(set(r["filter"]) & set(r["gold"]))
                   for r in records)
    chance = sum(len(set(r["filter"]) & set(r["gold"])) / len(r["filter"]) for r in records if r["filter"])
    return {"top_k": k, "questions": len(records), "headroom": headroom, "first_pick_chance": chance / len(records),
            "systems": {name: order_metrics(o, golds) for name, o in systems.items()}, "records": records}


def shuffled_setting(val: list, readers: dict, k: int, n: int) -> dict:
    from mmrag_rft.training.heldout import evaluate_stage2, stage2_prompts

    rows = stage2_prompts(val[:n], num_candidates=k, max_chars=200)
    out = {}
    for name, be in readers.items():
        r = evaluate_stage2(be, rows, max_new_tokens=96, samples=val, max_chars=200)
        out[name] = {"written_rank": r["selection"], "likelihood": r["likelihood"], "answer_acc": r["answer_acc"]}
    return {"candidates": k, "questions": len(rows), "readers": out}


def _questions(dataset: str, path: str | None) -> list:
    """WebQA: the shipped models' held-out questions; MMQA: those with gold among their candidates, in file order."""
    from mmrag_rft.data.loaders import load_samples
    from mmrag_rft.evaluation.evaluate import heldout_qids

    if dataset == "webqa":
        keep = heldout_qids("default")
        return [s for s in common.load_webqa(path or common.WEBQA_RECORDS) if s.qid in keep]
    samples = load_samples(str(path or common.MMQA_DEV), format="mmqa")
    return [s for s in samples if set(s.gold_ids) & {c.id for c in s.candidates}]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["webqa", "mmqa"], default="webqa")
    ap.add_argument("--data", default=None, help="the dataset's file (default: its copy in ../shared/data)")
    ap.add_argument("--readers", default="reader,qwen2.5-coder-0.5b")
    ap.add_argument("--top-k", type=int, default=3, help="survivors stage 2 ranks in the pipeline setting")
    ap.add_argument("--shuffled-questions", type=int, default=30, help="0 skips the shuffled setting")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--name", default="stage2_likelihood", help="result file name under benchmarks/results")
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    if args.shuffled_questions and args.dataset != "webqa":
        ap.error("--shuffled-questions needs --dataset webqa (its hardest negatives come from WebQA's pools); "
                 "pass --shuffled-questions 0")
    common.set_threads(args.threads)

    val = _questions(args.dataset, args.data)[: args.limit]
    note = common.CAPTION_NOTE if args.dataset == "webqa" else common.TITLE_NOTE
    readers = {name: common.load_policy(name) for name in args.readers.split(",")}
    pipe = pipeline_setting(val, readers, args.top_k)
    common.print_table(f"pipeline: the filter's top {args.top_k}, {pipe['questions']} held-out questions "
                       f"(first-pick chance {pipe['first_pick_chance']:.3f}; headroom {pipe['headroom']}; "
                       f"{note})", ["ranking", "first pick gold", f"NDCG@{args.top_k}", "top-2 F1"],
                       [[k, m["first_is_gold"], m["ndcg"], m["top2_f1"]] for k, m in pipe["systems"].items()])
    shuffled = shuffled_setting(val, readers, 3, args.shuffled_questions) if args.shuffled_questions else None
    if shuffled:
        common.print_table(f"shuffled: gold + the retriever's hardest negatives, K=3, {shuffled['questions']} "
                           f"questions ({common.CAPTION_NOTE})",
                           ["reader", "written <rank> first pick", "likelihood first pick", "chance"],
                           [[k, r["written_rank"]["first_is_gold"], r["likelihood"]["first_is_gold"],
                             r["likelihood"]["first_is_gold_chance"]] for k, r in shuffled["readers"].items()])
    path = common.write_result(args.name, {"dataset": args.dataset, "note": note, "pipeline": pipe,
                                           "shuffled": shuffled}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
