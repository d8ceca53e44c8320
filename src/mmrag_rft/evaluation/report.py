"""Human-facing outputs: a self-contained HTML report (thumbnails inlined), markdown tables, rich tables."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mmrag_rft.config import atomic_write_text, flatten


def thumbnail_data_uri(image: Any, size: int = 160) -> str | None:
    """A small JPEG as a data URI, so the report is one file that opens anywhere."""
    if image is None:
        return None
    img = image.copy()
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}
h1{font-size:1.5rem} .q{border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1rem 0}
.ok{color:#11703a;font-weight:600} .bad{color:#b3261e;font-weight:600} .muted{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.9em;margin:.5rem 0} td,th{border:1px solid #e3e3e3;padding:.25rem .5rem;text-align:left;vertical-align:top}
.cards{display:flex;flex-wrap:wrap;gap:.75rem} .card{border:1px solid #ccc;border-radius:6px;padding:.5rem;width:200px;font-size:.85em}
.card img{max-width:180px;max-height:140px;display:block;margin-bottom:.25rem} .gold{outline:3px solid #2e7d32}
pre{white-space:pre-wrap;background:#f7f7f7;padding:.5rem;border-radius:4px}
.bar{background:#eee;width:160px;height:.8em;display:inline-block;vertical-align:middle;margin-right:.4rem}
.bar span{background:#7a9cc6;height:100%;display:block} tr.kept .bar span{background:#2e7d32}
tr.kept td:first-child{font-weight:600}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


# Readable names for the metric keys `score_rows` writes; a key not listed here is shown as it is.
LABELS = {
    "n": "questions", "qa_acc": "QA-Acc", "n_retrieval": "questions with gold evidence", "retr_p": "evidence P",
    "retr_r": "evidence R", "retr_f1": "evidence F1", "lemmatizer": "lemmatiser", "dataset": "dataset",
    "domain_fallback": "domain fallback (RagVL's variant)", "candidates_judged": "candidates judged by stage 1",
    "removed_fraction": "removed by the filter", "gold_recall_retrieved": "gold evidence retrieved",
    "gold_recall_after_filter": "gold evidence kept by the filter", "stage1_ndcg@5": "stage-1 order NDCG@5",
    "stage1_recall@5": "stage-1 order recall@5", "stage2_ndcg@5": "cited order NDCG@5", "abstained": "abstained",
    "stage2_fallbacks": "stage-2 rank fallbacks", "unfaithful": "stage 2 named ids it was not shown",
    "reasoning_grounding": "reasoning grounded in the candidates (0-1)",
}


def _label(key: str) -> str:
    return _e(LABELS.get(key, key.replace("_", " ")))


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return _e(", ".join(_cell(x) for x in v))
    return _e(v)


def summary_tables(summary: Mapping[str, Any]) -> str:
    """Metrics as tables: scalars in one, each section in its own, a section of sections as rows x columns."""
    scalars = {k: v for k, v in summary.items() if not isinstance(v, Mapping)}
    html = []
    if scalars:
        html.append("<table>" + "".join(f"<tr><th>{_label(k)}</th><td>{_cell(v)}</td></tr>" for k, v in scalars.items())
                    + "</table>")
    for name, section in summary.items():
        if not isinstance(section, Mapping):
            continue
        html.append(f"<h3>{_e(name.replace('_', ' '))}</h3>")
        if section and all(isinstance(v, Mapping) for v in section.values()):
            cols = list(dict.fromkeys(c for v in section.values() for c in v))
            head = "<th></th>" + "".join(f"<th>{_label(c)}</th>" for c in cols)
            body = "".join("<tr><th>" + _e(k) + "</th>" + "".join(f"<td>{_cell(v.get(c, ''))}</td>" for c in cols)
                           + "</tr>" for k, v in section.items())
            html.append(f"<table><tr>{head}</tr>{body}</table>")
        else:  # a nested setting (the config's filter) as dotted rows, not a dumped dict
            html.append("<table>" + "".join(f"<tr><th>{_label(k)}</th><td>{_cell(v)}</td></tr>"
                                            for k, v in flatten(dict(section)).items()) + "</table>")
    return "".join(html)


def filter_ordered(judgements: Sequence[Mapping[str, Any]], kept_ids: Sequence[str]) -> list[Mapping[str, Any]]:
    """Judgements in the filter's order: the kept ones as the filter ranked them, then the rest by P(yes)."""
    by_id = {j["id"]: j for j in judgements}
    kept = [by_id[i] for i in kept_ids if i in by_id]
    rest = sorted((j for j in judgements if j["id"] not in set(kept_ids)), key=lambda j: -j["score"])
    return [*kept, *rest]


def _retrieved(j: Mapping[str, Any]) -> str:
    return "" if j.get("retrieval_rank") is None else f"#{j['retrieval_rank']}"


def stage1_bars(r: Mapping[str, Any], lookup: Callable[[str], Any], gold: set[str]) -> str:
    """Stage 1's P(yes) as a bar per candidate, in the filter's order, the kept set marked; the retriever's rank
    beside it, since the fused filter order reads both."""
    rows = []
    for j in filter_ordered(r.get("judgements") or [], r.get("kept_ids") or []):
        try:
            c = lookup(j["id"])
            name, modality = c.title or j["id"], c.modality
        except KeyError:
            name, modality = j["id"], ""
        width = max(0.0, min(1.0, float(j["score"]))) * 100
        rows.append(f"<tr class='{'kept' if j['kept'] else ''}'><td>{_e(name)} <span class='muted'>({_e(modality)})"
                    f"</span></td><td><span class='bar'><span style='width:{width:.0f}%'></span></span>"
                    f"{j['score']:.3f}</td><td>{_e(_retrieved(j))}</td><td>{'kept' if j['kept'] else ''}</td>"
                    f"<td>{'gold' if j['id'] in gold else ''}</td></tr>")
    return ("<h3>Stage-1 judgements (filter order)</h3><table><tr><th>candidate</th><th>P(yes)</th>"
            "<th>retriever rank</th><th>filter</th>"
            "<th>gold</th></tr>" + "".join(rows) + "</table>")


def html_report(rows: Iterable[Mapping[str, Any]], *, lookup: Callable[[str], Any],
                image_for: Callable[[Any], Any] | None = None, title: str = "MMRAG-RFT report",
                summary: Mapping[str, Any] | None = None, note: str = "") -> str:
    """rows: prediction rows (Result.to_dict() + gold_ids/answers/correct); lookup(id) -> Candidate."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{_CSS}</style>"
             f"</head><body><h1>{_e(title)}</h1>"]
    if note:
        parts.append(f"<p class='muted'>{_e(note)}</p>")
    if summary:
        parts.append(summary_tables(summary))
    for r in rows:
        gold = set(r.get("gold_ids") or [])
        correct = r.get("correct")
        verdict = "" if correct is None else (f"<span class='ok'>correct ({correct:.2f})</span>" if correct >= 0.5
                                              else f"<span class='bad'>wrong ({correct:.2f})</span>")
        parts.append(f"<div class='q'><h2>{_e(r['question'])}</h2>")
        parts.append(f"<p><b>Answer:</b> {_e(r['answer'])} {verdict}</p>")
        if r.get("answers"):
            parts.append(f"<p class='muted'>gold answer: {_e(' | '.join(r['answers']))}</p>")
        if r.get("abstained"):
            parts.append("<p class='bad'>abstained: nothing passed the stage-1 filter</p>")
        if r.get("fallback"):
            parts.append(f"<p class='muted'>{_e(r['fallback'])}</p>")
        for stage, why in (r.get("bypassed") or {}).items():
            parts.append(f"<p class='muted'>{_e(stage.replace('_', ' '))} bypassed: {_e(why)}</p>")
        if not r.get("faithful", True):
            parts.append(f"<p class='bad'>stage 2 named ids it was not shown: "
                         f"{_e(', '.join(r.get('unfaithful_ids') or []))}</p>")
        first = r.get("stage2_scores") or {}
        by = r.get("bypassed") or {}
        whose = "the filter's order" if by.get("stage2_ranking") or by.get("stage2_first_pick") or r.get("fallback") \
            else "stage 2's ranking"
        parts.append(f"<h3>Cited evidence ({whose})</h3><div class='cards'>")
        for pos, cid in enumerate(r.get("rank") or [], 1):
            try:
                c = lookup(cid)
            except KeyError:
                parts.append(f"<div class='card'>#{pos} unknown id {_e(cid)}</div>")
                continue
            uri = thumbnail_data_uri(image_for(c)) if (image_for and c.modality == "image") else None
            img = f"<img src='{uri}' alt='{_e(c.title)}'>" if uri else ""
            cls = "card gold" if cid in gold else "card"
            p_first = f" <span class='muted'>P(first) {first[cid]:.2f}</span>" if cid in first else ""
            parts.append(f"<div class='{cls}'>#{pos} <b>{_e(c.title or c.id)}</b> <span class='muted'>"
                         f"({_e(c.modality)})</span>{p_first}{img}<div>{_e(c.text[:220])}</div></div>")
        parts.append("</div>")
        if r.get("reasoning"):
            parts.append(f"<h3>Reasoning</h3><pre>{_e(r['reasoning'])}</pre>")
        parts.append(stage1_bars(r, lookup, gold))
        t = r.get("timings") or {}
        parts.append("<p class='muted'>" + ", ".join(f"{k} {v:.2f}" for k, v in t.items()) + "</p></div>")
    parts.append("</body></html>")
    return "".join(parts)


def report_image(c: Any) -> Any:
    """A candidate's pixels for its thumbnail, or None when it has none or they cannot be read: a report does not
    fail on one picture."""
    from mmrag_rft.data.images import load_image

    try:
        return load_image(c)
    except Exception:
        return None


def write_html_report(path: str, rows: Iterable[Mapping[str, Any]], **kw: Any) -> None:
    atomic_write_text(path, html_report(rows, **kw))


def markdown_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
