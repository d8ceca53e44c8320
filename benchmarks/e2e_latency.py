"""End-to-end `mmrag ask` latency per stage (retrieve, stage 1, stage 2) with the default model over the demo corpus.

- cold: a fresh process per question, as a user running `mmrag ask` sees it (interpreter start, imports, model and
  index load included): the real `mmrag ask --json` command timed from outside, plus one instrumented child
  process that splits the start-up into imports / model load / stage-2 reader load / index load;
- warm: the model and index loaded once, then N demo questions through `Pipeline.ask`.

    .venv/bin/python benchmarks/e2e_latency.py                    # 2 cold runs, 5 warm questions
    .venv/bin/python benchmarks/e2e_latency.py --cold 3 --warm 14
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T_START = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

STAGES = ["retrieve_s", "stage1_s", "stage2_s", "total_s"]


def demo_questions() -> list[str]:
    from mmrag_rft.data import demo_corpus_dir

    lines = (demo_corpus_dir() / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x)["question"] for x in lines if x.strip()]


def build_demo_index(out: Path) -> float:
    from mmrag_rft.data import demo_corpus_dir
    from mmrag_rft.data.jsonl import load_corpus
    from mmrag_rft.retrieval.build import build_index
    from mmrag_rft.retrieval.layout import RetrievalConfig

    t0 = time.perf_counter()
    build_index(load_corpus(demo_corpus_dir() / "corpus.jsonl"), out, RetrievalConfig(), base_dir=demo_corpus_dir())
    return time.perf_counter() - t0


def child(index: str, question: str, model: str) -> None:
    """Instrumented cold run: one question in this fresh process, start-up split into its parts."""
    t_imp = time.perf_counter()
    from mmrag_rft.models.loading import load_backend
    from mmrag_rft.pipeline import Pipeline, pipeline_config
    from mmrag_rft.retrieval.index import HybridIndex

    t_model = time.perf_counter()
    backend = load_backend(model)
    t_reader = time.perf_counter()
    pipe = Pipeline(backend, config=pipeline_config(model))  # the model's own settings, as `mmrag ask` uses
    pipe.reader  # noqa: B018  the stage-2 reader loads on first use; timed here, not inside stage 2
    t_index = time.perf_counter()
    pipe.index = HybridIndex.load(index)
    t_ask = time.perf_counter()
    r = pipe.ask(question)
    t_end = time.perf_counter()
    print(json.dumps({"interpreter_and_script_s": t_imp - T_START, "imports_s": t_model - t_imp,
                      "model_load_s": t_reader - t_model, "reader_load_s": t_index - t_reader,
                      "index_load_s": t_ask - t_index, "ask_s": t_end - t_ask, "timings": r.timings,
                      "in_process_s": t_end - T_START}))


def pipeline_summary(pipe: Any) -> dict[str, Any]:
    """The settings the timed questions ran with (the model's own, as `mmrag ask` uses) and the models loaded."""
    c = pipe.config
    return {"top_n": c.top_n, "stage1_mode": c.stage1_mode, "filter": {"order": c.filter.order,
            "threshold": c.filter.threshold, "top_k": c.filter.top_k}, "stage2_model": c.stage2_model or None,
            "stage2_reader": getattr(pipe.reader, "model_id", None), "stage2_max_new_tokens": c.stage2_max_new_tokens,
            "sources": c.sources}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--cold", type=int, default=2, help="fresh-process `mmrag ask` runs")
    ap.add_argument("--warm", type=int, default=5, help="questions answered with the model loaded once")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/e2e_latency.json)")
    ap.add_argument("--child", nargs=2, metavar=("INDEX", "QUESTION"), help=argparse.SUPPRESS)
    common.add_threads_flag(ap)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    if args.child:
        child(args.child[0], args.child[1], args.model)
        return 0

    questions = demo_questions()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory(prefix="mmrag-e2e-") as tmp:
        index = Path(tmp) / "index"
        build_s = build_demo_index(index)

        # cold: the real command, timed from outside
        cold_cli: list[dict[str, Any]] = []
        mmrag = Path(sys.executable).parent / "mmrag"
        with common.progress() as prog:
            task = prog.add_task("cold runs", total=args.cold + 1)
            for i in range(args.cold):
                q = questions[i % len(questions)]
                t0 = time.perf_counter()
                p = subprocess.run([str(mmrag), "ask", q, "--index", str(index), "--model", args.model, "--json"],
                                   capture_output=True, text=True, env=env, cwd=common.ROOT)
                wall = time.perf_counter() - t0
                if p.returncode != 0:
                    raise SystemExit(f"mmrag ask failed ({p.returncode}): {p.stderr.strip()[-500:]}")
                res = json.loads(p.stdout[p.stdout.index("{"):])
                cold_cli.append({"question": q, "wall_s": wall, "timings": res["timings"],
                                 "startup_s": wall - res["timings"]["total_s"]})
                prog.advance(task)
            p = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--model", args.model,
                                "--child", str(index), questions[0]], capture_output=True, text=True, env=env,
                               cwd=common.ROOT)
            if p.returncode != 0:
                raise SystemExit(f"instrumented cold run failed: {p.stderr.strip()[-500:]}")
            cold_parts = json.loads(p.stdout.strip().splitlines()[-1])
            prog.advance(task)

        # warm: load once, then N questions
        from mmrag_rft.pipeline import Pipeline

        t0 = time.perf_counter()
        pipe = Pipeline.from_paths(str(index), model=args.model)
        load_s = time.perf_counter() - t0
        pipe.ask(questions[0])  # first call pays one-off allocations; not counted
        warm: list[dict[str, Any]] = []
        with common.progress() as prog:
            task = prog.add_task("warm questions", total=args.warm)
            for i in range(args.warm):
                q = questions[(i + 1) % len(questions)]
                r = pipe.ask(q)
                warm.append({"question": q, "timings": r.timings, "kept": len(r.kept_ids),
                             "judged": len(r.judgements), "abstained": r.abstained})
                prog.advance(task)

    warm_med = {k: median([w["timings"][k] for w in warm]) for k in STAGES}
    cold_wall = median([c["wall_s"] for c in cold_cli])
    cold_med = {k: median([c["timings"][k] for c in cold_cli]) for k in STAGES}
    res = {
        "model": args.model, "corpus": "demo corpus (40 candidates)", "index_build_s": build_s,
        "pipeline": pipeline_summary(pipe),
        "cold": {"runs": cold_cli, "median_wall_s": cold_wall, "median_stage_s": cold_med,
                 "median_startup_s": median([c["startup_s"] for c in cold_cli]),
                 "instrumented_breakdown": cold_parts},
        "warm": {"model_and_index_load_s": load_s, "questions": warm, "median_stage_s": warm_med,
                 "stage_share": {k: warm_med[k] / warm_med["total_s"] for k in STAGES[:3]}},
        "cold_over_warm": cold_wall / warm_med["total_s"],
    }
    path = common.write_result("e2e_latency", res, args.out)
    common.print_table(f"mmrag ask latency, demo corpus ({args.model}), seconds (median)",
                       ["run", "start-up + load", "retrieve", "stage 1", "stage 2", "total"], [
                           ["cold (`mmrag ask`, fresh process)", res["cold"]["median_startup_s"],
                            *[cold_med[k] for k in STAGES[:3]], cold_wall],
                           [f"warm (model loaded once, {len(warm)} q)", 0.0,
                            *[warm_med[k] for k in STAGES[:3]], warm_med["total_s"]],
                       ])
    b = cold_parts
    print(f"cold start-up split: interpreter {b['interpreter_and_script_s']:.2f}s, imports {b['imports_s']:.2f}s, "
          f"model load {b['model_load_s']:.2f}s, reader load {b['reader_load_s']:.2f}s, "
          f"index load {b['index_load_s']:.2f}s; "
          f"cold/warm = {res['cold_over_warm']:.2f}x")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
