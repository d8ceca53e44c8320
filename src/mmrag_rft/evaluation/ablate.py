"""`mmrag ablate`: what each stage adds, on questions the shipped model never trained on, in one run.

Every system answers the same held-out questions over the same candidate pools; each is one resumable
`evaluate_file` run in its own folder, so an interrupted ablation picks up where it stopped. A "view" re-scores a
system's predictions with another source list (stage 2's own ranking instead of the filter's order) without
asking the model again.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrag_rft.config import atomic_write_text, save_png
from mmrag_rft.evaluation.evaluate import CAPTION_NOTE, evaluate_file, score_rows
from mmrag_rft.evaluation.report import markdown_table
from mmrag_rft.evaluation.runner import read_predictions


@dataclass
class System:
    name: str
    description: str
    model: str  # the stage-1 model spec (and the reader, unless overrides set stage2_model)
    overrides: list[str] = field(default_factory=list)
    view_of: str = ""  # re-score this system's predictions instead of asking again
    sources: Callable[[Mapping[str, Any]], list[str]] | None = None  # the view's source list for one prediction


def _stage2_sources(row: Mapping[str, Any], k: int) -> list[str]:
    """Stage 2's own ranking (the filter's order where stage 2's output was unusable), cut to k."""
    return list(row.get("stage2_rank") or row.get("kept_ids") or [])[:k]


def _written_sources(row: Mapping[str, Any], k: int) -> list[str]:
    """The <rank> list stage 2 wrote (the filter's order where it was unusable), cut to k."""
    return list(row.get("stage2_written") or row.get("kept_ids") or [])[:k]


def default_systems(reader: str, *, sources: int = 2, model: str = "default",
                    candidates: Mapping[str, str] | None = None, candidate_ranking: str = "generate") -> list[System]:
    """The simple alternatives a user would pick, the trained stage 1 with the 135M model reading, then the shipped
    system (`--model default` as it is) and what stage 2's own ranking would change.

    `reader`: the stage-2 model the retriever-alone row answers with (the shipped default's `stage2_model`, so
    that row differs from the shipped one only by stage 1). `model`: the trained stage-1 model spec. `candidates`:
    stage-2 models to weigh against the shipped one by row name ({"candidate_stage2": "runs/stage2_reader"}); each
    reads the same survivors and gets a `<name>_rank` view. `candidate_ranking`: their `stage2_ranking`; other than
    `generate`, they also get a `<name>_written` view (sources follow the list they wrote, from the same answers).
    """
    rname = reader or "the stage-1 model"
    return [
        System("closed_book", f"no retrieval: {rname} answers from the question alone", "base",
               ["closed_book=true", f'stage2_model="{reader}"']),
        System("retriever_topk", f"retriever's top {sources} -> {rname} answers (no stage 1, no stage-2 ranking)",
               "base", ["stage1_mode=skip", f"filter.top_k={sources}", "sources=filter",
                        f"max_sources={sources}", f'stage2_model="{reader}"']),
        System("minilm_topk", f"MiniLM cosine's top {sources} (no BM25, no stage 1) -> {rname} answers", "base",
               ["pool_retrieval=dense", "stage1_mode=skip", f"filter.top_k={sources}", "sources=filter",
                f"max_sources={sources}", f'stage2_model="{reader}"']),
        System("stage2_unfiltered", f"the retriever's top 9 (no stage 1) -> {rname} reads them all and ranks; "
                                    f"sources follow its <rank> list (the retriever's order where it is unusable)",
               "base", ["stage1_mode=skip", "filter.top_k=9", "sources=stage2", f"max_sources={sources}",
                        f'stage2_model="{reader}"']),
        System("untrained", "the untrained SmolLM2-135M for both stages, its default settings", "base"),
        System("stage1_135m_reads", "trained stage 1 filters (fused top 9), the 135M model itself reads and answers",
               model, ['stage2_model=""', "filter.top_k=9"]),
        System("shipped", "the shipped default (--model default): trained stage 1's fused top "
                          f"{sources} -> {rname} answers; sources follow the filter's order", model),
        System("shipped_stage2_rank", f"as shipped, sources follow {rname}'s own <rank> list", model,
               view_of="shipped", sources=lambda row: _stage2_sources(row, sources)),
    ] + [s for name, spec in (candidates or {}).items() for s in (
        System(name, f"as shipped, {spec} reads and answers instead; sources follow the filter", model,
               [f'stage2_model="{spec}"'] + ([f"stage2_ranking={candidate_ranking}"]
                                             if candidate_ranking != "generate" else [])),
        System(f"{name}_rank", f"as {name}, sources follow {spec}'s own ranking"
               + (f" (stage2_ranking: {candidate_ranking})" if candidate_ranking != "generate" else " <rank> list"),
               model, view_of=name, sources=lambda row: _stage2_sources(row, sources)),
    ) + ((System(f"{name}_written", f"as {name}, sources follow the <rank> list {spec} wrote", model,
                 view_of=name, sources=lambda row: _written_sources(row, sources)),)
         if candidate_ranking != "generate" else ())]


def row_numbers(m: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One system's table row from `score_rows` output: answer score, evidence, filter and speed columns."""
    o, f = m["overall"], m["filter"]
    secs = [r["timings"]["total_s"] for r in rows if (r.get("timings") or {}).get("total_s") is not None]
    f1s = [x for x in m["per_question_retrieval_f1"] if x == x]  # MMQA's metric set has no retrieval F1 of its own
    answer = {"qa_acc": o["qa_acc"]} if "qa_acc" in o else {"list_em": o["list_em"] / 100, "list_f1": o["list_f1"] / 100}
    return {"n": o["n"], **answer, "retrieval_f1": o.get("retr_f1", statistics.mean(f1s) if f1s else None),
            "retrieval_p": o.get("retr_p"), "retrieval_r": o.get("retr_r"),
            "gold_kept": f["gold_recall_after_filter"], "sources_ndcg@5": f["stage2_ndcg@5"],
            "stage2_fallbacks": f["stage2_fallbacks"], "abstained": f["abstained"],
            "reasoning_grounding": f.get("reasoning_grounding"),
            "s_per_question": statistics.mean(secs) if secs else None}


def run_ablation(path: str | Path, *, dataset: str, out_dir: str | Path, heldout: str | None, limit: int | None,
                 systems: Sequence[System], load: Callable[[str], Any], progress: bool = True,
                 with_gold: bool = False) -> dict[str, Any]:
    """Run (or resume) every system, then write ablation.json / ablation.md / ablation.png in out_dir.
    `with_gold`: only questions with gold evidence among their candidates (see `evaluate_file`)."""
    from mmrag_rft.pipeline import pipeline_config

    out = Path(out_dir)
    results: dict[str, dict[str, Any]] = {}
    asked: dict[str, list[str]] = {}  # per run system: the questions of this ablation (not older, wider runs)
    for s in systems:
        if s.view_of:
            continue
        cfg = pipeline_config(s.model, None, s.overrides)
        asked[s.name] = evaluate_file(
            path, dataset=dataset, out_dir=out / s.name, limit=limit, config=cfg, progress=progress,
            backend_factory=lambda m=s.model: load(m), model=s.model, heldout=heldout, with_gold=with_gold,
            reader_factory=(lambda m=cfg.stage2_model: load(m)) if cfg.stage2_model else None)["qids"]
    for s in systems:
        preds = read_predictions(out / (s.view_of or s.name) / "predictions.jsonl")
        rows = [preds[q] for q in asked[s.view_of or s.name]]
        if s.sources is not None:
            rows = [{**r, "rank": s.sources(r)} for r in rows]
        results[s.name] = {"description": s.description, "model": s.model, "overrides": s.overrides,
                           **({"view_of": s.view_of} if s.view_of else {}),
                           **row_numbers(score_rows(rows, dataset=dataset), rows)}
    n = min((r["n"] for r in results.values()), default=0)
    gold = ", those with gold evidence among their candidates" if with_gold else ""
    summary = {"benchmark": "ablation", "data": Path(path).name, "dataset": dataset, "heldout_of": heldout,
               "with_gold": with_gold, "questions": n,
               "note": (f"{n} questions the stage-1 model never trained on" if heldout else
                        f"{n} questions, no split applied (--heldout none)") + f"{gold}; {CAPTION_NOTE}",
               "systems": results}
    atomic_write_text(out / "ablation.json", json.dumps(summary, indent=2, default=str))
    atomic_write_text(out / "ablation.md", ablation_markdown(summary))
    plot_ablation(summary, out / "ablation.png")
    return summary


COLUMNS = ("qa_acc", "retrieval_f1", "gold_kept", "sources_ndcg@5", "stage2_fallbacks", "abstained",
           "reasoning_grounding", "s_per_question")


def _answer_metric(summary: Mapping[str, Any]) -> str:
    """WebQA's QA-Acc, or MMQA's list F1 (as a fraction) for an MMQA ablation."""
    return "qa_acc" if any("qa_acc" in r for r in summary["systems"].values()) else "list_f1"


def ablation_markdown(summary: Mapping[str, Any]) -> str:
    cols = COLUMNS if _answer_metric(summary) == "qa_acc" else ("list_em", "list_f1", *COLUMNS[1:])
    rows = [[name, r["n"], *(r.get(c) for c in cols), r["description"]] for name, r in summary["systems"].items()]
    return "\n".join([f"# Ablation ({summary['dataset']}, {summary['data']})", "", f"_{summary['note']}_", "",
                      markdown_table(["system", "n", *cols, "what it is"], rows), ""])


def plot_ablation(summary: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["systems"])
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.38
    for i, metric in enumerate((_answer_metric(summary), "retrieval_f1")):
        vals = [summary["systems"][n].get(metric) or 0.0 for n in names]
        ax.bar([x + (i - 0.5) * width for x in range(len(names))], vals, width, label=metric)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.legend()
    held = "held-out " if summary.get("heldout_of") else ""
    ax.set_title(f"{summary['questions']} {held}questions ({CAPTION_NOTE})")
    fig.tight_layout()
    save_png(fig, path, dpi=110)
