"""`mmrag demo`: index the shipped demo corpus, answer its questions end to end, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmrag_rft.config import atomic_write_text


def build_or_load_demo_index(out_dir: Path) -> Any:
    """Reuse a demo index whose manifest still matches the corpus; rebuild otherwise."""
    from mmrag_rft.data import demo_corpus_dir
    from mmrag_rft.data.jsonl import load_corpus
    from mmrag_rft.retrieval.build import build_index
    from mmrag_rft.retrieval.index import HybridIndex
    from mmrag_rft.retrieval.layout import RetrievalConfig

    from rich.console import Console

    console = Console(stderr=True)
    index_dir = out_dir / "index"
    corpus = demo_corpus_dir() / "corpus.jsonl"
    if index_dir.exists():
        try:
            idx = HybridIndex.load(index_dir)
            if idx.matches(load_corpus(corpus)):
                return idx
            console.print("[yellow]demo index is stale (corpus changed): rebuilding[/]")
        except Exception as e:  # stale or damaged: rebuild, but say so
            console.print(f"[yellow]demo index unusable ({e}): rebuilding[/]")
    build_index(load_corpus(corpus), index_dir, RetrievalConfig(), base_dir=corpus.parent)
    return HybridIndex.load(index_dir)


def run_demo(out_dir: str | Path, *, backend: Any, config: Any, limit: int | None = None,
             reader: Any = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from mmrag_rft.data import demo_corpus_dir
    from mmrag_rft.data.jsonl import load_samples_jsonl
    from mmrag_rft.evaluation.evaluate import score_rows
    from mmrag_rft.evaluation.report import report_image, write_html_report
    from mmrag_rft.evaluation.runner import prediction_row
    from mmrag_rft.pipeline import Pipeline

    console = Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    idx = build_or_load_demo_index(out)
    samples = list(load_samples_jsonl(demo_corpus_dir() / "questions.jsonl"))[:limit]
    pipe = Pipeline(backend, index=idx, config=config, reader=reader)
    rows = []
    with console.status("answering the demo questions") as status:
        for i, s in enumerate(samples, 1):
            status.update(f"answering demo question {i}/{len(samples)}: {s.question[:60]}")
            rows.append(prediction_row(s, pipe.ask(s.question, qid=s.qid)))
    metrics = score_rows(rows, dataset="webqa")
    for r, acc in zip(rows, metrics["per_question_acc"]):
        r["correct"] = acc
    table = Table(title=f"demo: {len(rows)} questions, policy {rows[0]['models'].get('policy') if rows else '-'}")
    for col in ("question", "answer", "gold", "acc", "evidence F1", "kept", "s"):
        table.add_column(col, overflow="fold")
    for r, f1 in zip(rows, metrics["per_question_retrieval_f1"]):
        table.add_row(r["question"], r["answer"][:80], " | ".join(r["answers"])[:40], f"{r['correct']:.2f}",
                      f"{f1:.2f}", str(len(r["kept_ids"])), f"{r['timings']['total_s']:.1f}")
    console.print(table)
    summary = {k: v for k, v in metrics.items() if not k.startswith("per_question")}
    o, f = summary["overall"], summary["filter"]
    console.print(f"QA-Acc {o['qa_acc']:.3f} | evidence F1 {o.get('retr_f1', float('nan')):.3f} | "
                  f"filter removed {f['removed_fraction']:.0%} of candidates, kept {f['gold_recall_after_filter']:.0%} "
                  f"of gold evidence | abstained {f['abstained']} | stage-2 fallbacks {f['stage2_fallbacks']}")
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
    write_html_report(str(out / "report.html"), rows, lookup=idx.get,
                      image_for=report_image, title="MMRAG-RFT demo", summary=summary,
                      note="Demo corpus shipped with mmrag-rft. A text-only policy reads image captions, not pixels.")
    console.print(f"report: {out / 'report.html'}")
    return summary
