"""Scoring a predictions file against gold data with the official WebQA / MMQA metrics (`mmrag score`).

A submission is a WebQA-style JSON object {qid: {answer, sources}} or JSONL rows {qid, answer, sources}; the
evaluation runner's rows (`rank` holds the sources) are one too. (`runner.read_predictions` reads the runner's own
rows for resuming, whole.)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open("r", encoding="utf-8")


def read_submission(path: Path) -> dict[str, dict[str, Any]]:
    """{qid: {"answer": str | list, "sources": [ids]}} from a WebQA-style JSON object or JSONL rows
    ({qid, answer, sources}; the evaluation runner's rows, whose `rank` holds the sources, work too)."""
    try:
        with _open_text(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from None
    preds: dict[str, dict[str, Any]] = {}

    def add(qid: Any, row: Any, where: str) -> None:
        if isinstance(row, str):
            row = {"answer": row}
        if not isinstance(row, dict):
            raise ValueError(f"{path}, {where}: prediction must be an object or a string")
        ans = row.get("answer", "")
        if ans is None:
            ans = ""
        if not isinstance(ans, (str, list)):
            raise ValueError(f"{path}, {where}, field 'answer': must be a string or a list of strings")
        src = row.get("sources", row.get("rank", []))
        if src is None:
            src = []
        if not isinstance(src, list):
            raise ValueError(f"{path}, {where}, field 'sources': must be a list of ids")
        preds[str(qid)] = {"answer": ans, "sources": [str(s) for s in src]}

    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # perhaps JSONL
        if isinstance(obj, dict) and "qid" not in obj:
            for qid, row in obj.items():
                add(qid, row, f"key {qid!r}")
            return preds
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, row {n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or "qid" not in row:
            raise ValueError(f"{path}, row {n}, field 'qid': missing")
        add(row["qid"], row, f"row {n}")
    return preds


def read_gold(path: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """Gold rows from any file the data loaders read (WebQA JSON or val TSV, MMQA jsonl, our JSONL)."""
    from mmrag_rft.data.loaders import load_samples

    rows = []
    for s in load_samples(str(path), format=fmt or "auto"):
        meta = s.meta or {}
        modalities = meta.get("answer_modalities") or []
        rows.append({
            "qid": s.qid, "qcate": s.category, "answers": list(s.answers), "gold_sources": list(s.gold_ids),
            "keywords": meta.get("keywords"), "outputs": meta.get("baseline_output"),
            "qtype": meta.get("type") or s.category,
            "modality": meta.get("answer_modality") or (modalities[0] if modalities else ""),
        })
    return rows


def score_submission(dataset: str, preds: dict[str, dict[str, Any]] | None, gold: list[dict[str, Any]], *,
          output_idx: int = 0, domain_fallback: bool = False, fluency: list[float] | None = None) -> dict[str, Any]:
    """preds=None scores the VLP baseline outputs carried by the gold TSV rows; `dataset` is a registered name and
    its metric set (data/datasets.py) picks the metrics."""
    from mmrag_rft.data.datasets import get_dataset
    from mmrag_rft.metrics.mmqa import score_mmqa
    from mmrag_rft.metrics.webqa import references_for, score_webqa

    webqa_metrics = get_dataset(dataset).metric_set == "webqa"
    missing = 0
    items = []
    for i, g in enumerate(gold):
        if preds is None:
            outs = g.get("outputs") or []
            p = {"answer": outs[output_idx] if len(outs) > output_idx else "", "sources": []}
        else:
            p = preds.get(g["qid"])
            if p is None:
                missing += 1
        if webqa_metrics:
            ans = (p or {}).get("answer", "")
            items.append({"qid": g["qid"], "qcate": g["qcate"],
                          "prediction": " ".join(ans) if isinstance(ans, list) else ans,
                          "references": references_for(g.get("keywords"), g["answers"]),
                          "pred_sources": (p or {}).get("sources", []), "gold_sources": g.get("gold_sources", []),
                          "fluency": fluency[i] if fluency else None})
        else:
            items.append({"qid": g["qid"], "prediction": None if p is None else p.get("answer"),
                          "gold": g["answers"], "qtype": g.get("qtype", ""), "modality": g.get("modality", "")})
    result = score_webqa(items, domain_fallback=domain_fallback) if webqa_metrics else score_mmqa(items)
    result["missing_predictions"] = missing
    if preds is not None:
        result["unknown_predictions"] = len(set(preds) - {g["qid"] for g in gold})
    return result
