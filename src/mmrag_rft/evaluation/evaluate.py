"""`mmrag evaluate`: the pipeline over a benchmark's own candidate pools, then its official-style metrics."""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmrag_rft.config import atomic_write_text, flatten
from mmrag_rft.data.schema import DataError
from mmrag_rft.evaluation.report import markdown_table, report_image, write_html_report
from mmrag_rft.metrics.mmqa import score_mmqa
from mmrag_rft.metrics.ranking import ndcg_at_k, recall_at_k, set_prf
from mmrag_rft.metrics.webqa import references_for, score_webqa

CAPTION_NOTE = "captions stand in for pixels"


def _stage1_order(row: Mapping[str, Any]) -> list[str]:
    return [j["id"] for j in sorted(row.get("judgements") or [], key=lambda j: -j["score"])]


def filter_stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """What the coarse filter did: share of candidates removed, gold evidence kept, stage-1 ranking quality."""
    judged = sum(len(r.get("judgements") or []) for r in rows)
    kept = sum(len(r.get("kept_ids") or []) for r in rows)
    with_gold = [r for r in rows if r.get("gold_ids")]
    gold_total = sum(len(r["gold_ids"]) for r in with_gold)
    gold_kept = sum(len(set(r["gold_ids"]) & set(r.get("kept_ids") or [])) for r in with_gold)
    gold_retrieved = sum(len(set(r["gold_ids"]) & {j["id"] for j in r.get("judgements") or []}) for r in with_gold)
    n = len(with_gold) or 1
    grounded = [r["reasoning_grounding"] for r in rows if r.get("reasoning_grounding") is not None]
    return {
        "candidates_judged": judged,
        "removed_fraction": 1 - kept / judged if judged else float("nan"),
        "gold_recall_retrieved": gold_retrieved / gold_total if gold_total else float("nan"),
        "gold_recall_after_filter": gold_kept / gold_total if gold_total else float("nan"),
        "stage1_ndcg@5": sum(ndcg_at_k(_stage1_order(r), r["gold_ids"], 5) for r in with_gold) / n,
        "stage1_recall@5": sum(recall_at_k(_stage1_order(r), r["gold_ids"], 5) for r in with_gold) / n,
        "stage2_ndcg@5": sum(ndcg_at_k(r.get("rank") or [], r["gold_ids"], 5) for r in with_gold) / n,
        "abstained": sum(bool(r.get("abstained")) for r in rows),
        "stage2_fallbacks": sum(bool(r.get("fallback")) for r in rows),
        "unfaithful": sum(not r.get("faithful", True) for r in rows),
        # rewards.grounding_score of stage 2's reasoning: 0 for a restated question or the prompt's example copied
        "reasoning_grounding": statistics.mean(grounded) if grounded else float("nan"),
    }


def score_rows(rows: Sequence[Mapping[str, Any]], *, dataset: str) -> dict[str, Any]:
    """Official-style metrics over prediction rows (runner.prediction_row), plus filter statistics, by the metric
    set the dataset registers (`data.datasets`)."""
    from mmrag_rft.data.datasets import get_dataset

    if get_dataset(dataset).metric_set == "mmqa":
        m = score_mmqa({"qid": r["qid"], "prediction": r["answer"], "gold": r.get("answers") or [],
                        "qtype": (r.get("meta") or {}).get("type", ""),
                        "modality": (r.get("meta") or {}).get("answer_modality", "")} for r in rows)
        per_acc = [q["f1"] for q in m["per_question"]]
        per_f1 = [set_prf(r.get("rank") or [], r.get("gold_ids") or [])[2] for r in rows]
    else:
        m = score_webqa({"qid": r["qid"], "qcate": r.get("category") or "", "prediction": r["answer"],
                         "references": references_for((r.get("meta") or {}).get("keywords"), r.get("answers") or []),
                         "pred_sources": r.get("rank") or [], "gold_sources": r.get("gold_ids") or []}
                        for r in rows)
        per_acc = [q["qa_acc"] for q in m["per_question"]]
        per_f1 = [q.get("retr_f1", float("nan")) for q in m["per_question"]]
    m["filter"] = filter_stats(rows)
    m["per_question_acc"] = per_acc
    m["per_question_retrieval_f1"] = per_f1
    return m


def metrics_markdown(m: Mapping[str, Any], *, note: str = "") -> str:
    lines = [f"# Evaluation ({m['dataset']})", ""]
    if note:
        lines += [f"_{note}_", ""]
    if m["dataset"] == "webqa":
        header = ["category", "n", "QA-Acc", "retrieval P", "retrieval R", "retrieval F1"]
        groups = [("overall", m["overall"])] + list(m["per_category"].items())
        lines.append(markdown_table(header, [[k, g["n"], g["qa_acc"], g.get("retr_p", math.nan),
                                              g.get("retr_r", math.nan), g.get("retr_f1", math.nan)]
                                             for k, g in groups]))
    else:
        header = ["group", "n", "list EM", "list F1"]
        groups = [("overall", m["overall"])] + [(f"type {k}", g) for k, g in m["per_type"].items()] + \
                 [(f"modality {k}", g) for k, g in m["per_modality"].items()]
        lines.append(markdown_table(header, [[k, g["n"], g["list_em"], g["list_f1"]] for k, g in groups]))
    lines += ["", "## Coarse filter and ranking", "",
              markdown_table(["statistic", "value"], [[k, v] for k, v in m["filter"].items()])]
    return "\n".join(lines)


class RunMismatch(ValueError):
    """An output folder holds predictions made with other settings: resuming would mix two runs."""


RUN_NAME = "run.json"


def check_run(out: Path, settings: dict[str, Any]) -> None:
    """Resume only what was started with the same model, dataset and pipeline config; record them otherwise.

    The runner skips every question already in predictions.jsonl, so without this check a re-run with, say,
    another `--set filter.top_k` would silently report the old predictions under the new settings.
    """
    path = out / RUN_NAME
    preds = out / "predictions.jsonl"
    if path.is_file() and not (preds.is_file() and preds.stat().st_size):
        path.unlink()  # a run that failed before its first answer (a typo'd --model): nothing to protect
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RunMismatch(f"{path}: unreadable ({e}); delete it and {out / 'predictions.jsonl'} to start over")
        a, b = flatten(saved), flatten(json.loads(json.dumps(settings, default=str)))
        diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if diff:
            raise RunMismatch(f"{out} holds predictions made with other settings ({'; '.join(diff[:5])}"
                              f"{'; ...' if len(diff) > 5 else ''}): re-running there resumes that run, so use "
                              f"another --out, or delete {out} to start over")
        return
    if (out / "predictions.jsonl").is_file():
        raise RunMismatch(f"{out} holds predictions but no {RUN_NAME} saying how they were made: use another --out, "
                          f"or delete {out / 'predictions.jsonl'} to start over")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=2, default=str))


def evaluate_file(path: str | Path, *, dataset: str, out_dir: str | Path, limit: int | None, config: Any,
                  skip_bad: bool = False, backend_factory: Callable[[], Any], progress: bool = True,
                  model: str | None = None, heldout: str | Path | None = None,
                  reader_factory: Callable[[], Any] | None = None, with_gold: bool = False,
                  index: Any = None) -> dict[str, Any]:
    """`heldout`: a training run or shipped model folder; only the questions its split.json held out (never trained
    on) are asked. `with_gold`: only questions with gold evidence among their candidates (on MMQA offline, the
    image questions: their texts and tables are absent), applied before `limit`. `reader_factory`: the stage-2
    backend when `config.stage2_model` names one. `index`: a loaded `HybridIndex` that questions without a pool of
    their own retrieve from (their gold ids name its candidates). Returns the summary written to metrics.json plus
    `qids`, the questions it covers."""
    from rich.console import Console

    from mmrag_rft.data.datasets import get_dataset
    from mmrag_rft.data.loaders import load_samples
    from mmrag_rft.evaluation.runner import run
    from mmrag_rft.pipeline import Pipeline

    metric_set = get_dataset(dataset).metric_set  # an unknown dataset fails before anything loads

    console = Console(stderr=True)
    out = Path(out_dir)
    # the settings a resume must share (limit is not one: a larger --limit extends the same run)
    keep = heldout_qids(heldout) if heldout is not None else None
    if out.exists() and not out.is_dir():
        raise RunMismatch(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        check_run(out, {"model": model, "dataset": dataset, "data": Path(path).name, "config": _asdict(config),
                        **({"heldout_of": str(heldout)} if heldout is not None else {}),
                        **({"with_gold": True} if with_gold else {}),
                        **({"index_corpus": index.manifest.corpus_hash} if index is not None else {})})
        report: list[Any] = []
        filtered = keep is not None or with_gold
        samples = list(load_samples(path, format=dataset if dataset != "jsonl" else "jsonl", skip_bad=skip_bad,
                                    report=report, limit=None if filtered else limit))
        if keep is not None:
            samples = [s for s in samples if s.qid in keep]
            if not samples:
                raise RunMismatch(f"{heldout}/split.json: none of its held-out questions is in {path}; questions no "
                                  "model here trained on are all held out: `--heldout none` asks every one")
        if with_gold:  # a question that retrieves from the index has its gold there (check_pools)
            samples = [s for s in samples
                       if (index is not None and not s.candidates) or set(s.gold_ids) & {c.id for c in s.candidates}]
            if not samples:
                raise RunMismatch(f"--with-gold: no question of {path} has gold evidence among its candidates")
        if filtered:
            samples = samples[:limit]
        no_pool = check_pools(samples, path, index)
        if no_pool:
            console.print(f"[yellow]{no_pool} question(s) have no candidates and no --index to retrieve from: they "
                          "are asked with an empty pool and abstain[/]")
        if report:
            console.print(f"[yellow]skipped {len(report)} malformed row(s):[/]")
            for e in report[:20]:
                console.print(f"  {e}")
        pipe: Pipeline | None = None

        def ask(s: Any) -> Any:
            nonlocal pipe
            if pipe is None:  # load the model only if there is work left (a finished run re-scores instantly)
                pipe = Pipeline(backend_factory(), index=index, config=config,
                                reader=reader_factory() if reader_factory else None)
            return pipe.ask(s.question, candidates=s.candidates or None, qid=s.qid)

        preds = run(samples, ask, out, progress=progress)
        wanted = {s.qid for s in samples}
        rows = [preds[q] for q in (s.qid for s in samples) if q in preds and q in wanted]
        m = score_rows(rows, dataset=dataset)
        note = (f"{len(rows)} questions from {Path(path).name}"
                f"{f', held out by {heldout}' if heldout is not None else ''}"
                f"{', those with gold among their candidates' if with_gold else ''}; {CAPTION_NOTE} "
                "(text-only policy reads captions)")
        summary = {k: v for k, v in m.items() if not k.startswith("per_question")}
        summary["note"] = note
        summary["config"] = _asdict(config)
        atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2, default=str))
        atomic_write_text(out / "metrics.md", metrics_markdown(m, note=note))
        pool = {c.id: c for s in samples for c in s.candidates}
        write_html_report(str(out / "report.html"),
                          [{**r, "correct": acc} for r, acc in zip(rows, m["per_question_acc"])],
                          lookup=lambda cid: pool[cid] if cid in pool or index is None else index.get(cid),
                          image_for=report_image, title=f"MMRAG-RFT evaluation: {Path(path).name}",
                          summary={k: v for k, v in summary.items() if k != "note"}, note=note)
        if metric_set == "webqa":  # the official submission format, for the eval server
            sub = {r["qid"]: {"sources": r.get("rank") or [], "answer": r["answer"]} for r in rows}
            atomic_write_text(out / "submission.json", json.dumps(sub, indent=1))
        console.print(metrics_markdown(m, note=note))
        console.print(f"wrote {out / 'predictions.jsonl'}, {out / 'metrics.json'}, {out / 'metrics.md'}, "
                      f"{out / 'report.html'}")
        return {**summary, "qids": [r["qid"] for r in rows]}  # the questions these metrics are over


def check_pools(samples: Sequence[Any], path: str | Path, index: Any) -> int:
    """Questions without a candidate pool of their own retrieve from `index`. Without an index: a DataError when no
    question has a pool, else how many have none (they abstain). With one: a DataError for a gold id it does not
    hold (the index of another corpus?)."""
    no_pool = [s for s in samples if not s.candidates]
    if not no_pool:
        return 0
    if index is None:
        if len(no_pool) < len(samples):
            return len(no_pool)
        raise DataError(f"{path}: no question has 'candidates' (first: {no_pool[0].qid}): pass --index DIR, an index "
                        "of the corpus their gold_ids name (`mmrag index CORPUS --out DIR`), or give each question "
                        "its pool")
    for s in no_pool:
        for g in s.gold_ids:
            try:
                index.get(g)
            except KeyError:
                raise DataError(f"{path}: question {s.qid}: gold id {g!r} is not in the index at {index.dir} "
                                "(an index of another corpus?)") from None
    return 0


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """One evaluate per output folder at a time: two would append duplicate rows to one predictions file."""
    import fcntl

    with open(out / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunMismatch(f"{out}: another evaluate is writing there right now; wait for it or use another "
                              "--out") from None
        yield


def heldout_qids(run_dir: str | Path) -> set[str]:
    """The `val` side of a training run's (or an exported model's) split.json: the questions it never trained on.
    `run_dir` may also be a model spec (`default`: the shipped stage-1 model's own split)."""
    return split_qids(run_dir, "val")


def split_qids(run_dir: str | Path, side: str = "val") -> set[str]:
    """One side (`val`, `train`) of a training run's or exported model's split.json; see `heldout_qids`."""
    folder = Path(run_dir)
    if not folder.exists():
        from mmrag_rft.models.loading import source_path

        try:
            folder = source_path(str(run_dir))
        except (FileNotFoundError, ValueError) as e:
            raise RunMismatch(f"--heldout {run_dir}: {e}") from None
    p = folder / "split.json"
    try:
        split = json.loads(p.read_text(encoding="utf-8"))
        return set(split[side])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunMismatch(f"{p}: cannot read the run's held-out questions ({type(e).__name__}: {e})") from None


def _asdict(cfg: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg
