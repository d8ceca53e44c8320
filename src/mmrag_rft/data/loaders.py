"""One entry point for every sample format, with detection from the file's content (never its name alone)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from mmrag_rft.data.jsonl import load_samples_jsonl, read_head
from mmrag_rft.data.mmqa import load_mmqa
from mmrag_rft.data.schema import DataError, Sample
from mmrag_rft.data.webqa import load_webqa, load_webqa_tsv

Format = Literal["auto", "webqa", "webqa-tsv", "mmqa", "jsonl"]
FORMATS: tuple[str, ...] = ("auto", "webqa", "webqa-tsv", "mmqa", "jsonl")
# What detect_format can say: the sample formats above plus "corpus" (our candidate-per-line file).
DETECTED: tuple[str, ...] = ("webqa", "webqa-tsv", "mmqa", "jsonl", "corpus")

_WEBQA_KEYS = re.compile(r'"(Qcate|Guid|img_posFacts|txt_posFacts|img_Facts|txt_Facts)"\s*:')


def demo_corpus_dir() -> Path:
    """The demo corpus installed with the package (corpus.jsonl, questions.jsonl, images/)."""
    return Path(__file__).resolve().parent.parent / "demo_corpus"


def _classify_object(obj: dict[str, Any]) -> str | None:
    if "qid" in obj and "question" in obj:
        md = obj.get("metadata")
        if isinstance(md, dict) and ("image_doc_ids" in md or "text_doc_ids" in md or "supporting_context" in obj):
            return "mmqa"
        if "supporting_context" in obj:
            return "mmqa"
        return "jsonl"
    if "id" in obj and "modality" in obj:
        return "corpus"
    vals = list(obj.values())[:3]
    if vals and all(isinstance(v, dict) for v in vals) and any(("Q" in v or "Guid" in v) for v in vals):
        return "webqa"
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """'webqa' | 'webqa-tsv' | 'mmqa' | 'jsonl' | 'corpus', from the first 64 KB (gzip or not)."""
    p = Path(path)
    head = read_head(p)
    stripped = head.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise DataError("empty file", file=str(p))
    first_line = stripped.split("\n", 1)[0]
    if first_line.startswith("Guid\t") or ("\t" in first_line and "Qcate" in first_line.split("\t")):
        return "webqa-tsv"
    if stripped[0] == "{":
        if "\n" in stripped or len(head) < 65536:
            try:
                obj = json.loads(first_line)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                kind = _classify_object(obj)
                if kind is not None:
                    return kind
        if _WEBQA_KEYS.search(stripped):
            return "webqa"
    raise DataError("cannot tell the format (expected WebQA JSON or TSV, MMQA jsonl, or our JSONL); "
                    "pass --format", file=str(p))


def load_samples(path: str | os.PathLike[str], format: Format = "auto", *, skip_bad: bool = False,
                 report: list[DataError] | None = None, limit: int | None = None, **kw: Any) -> Iterator[Sample]:
    """Stream samples from any supported file.

    Every malformed row raises a DataError naming file, row (line number or Guid) and field; with
    `skip_bad` it is appended to `report` and logged instead. Extra keywords go to the format's loader
    (WebQA: images_tsv, images_lineidx, split, shuffle; MMQA: texts, tables, images, image_dir).
    """
    if format not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {list(FORMATS)}", file=str(path))
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "webqa" and format == "webqa" and detect_format(path) == "webqa-tsv":
        fmt = "webqa-tsv"  # the val query TSVs are WebQA too
    common: dict[str, Any] = {"skip_bad": skip_bad, "report": report, "limit": limit}
    if fmt == "corpus":
        raise DataError("this is a corpus file (one candidate per line), not a samples file; "
                        "index it with `mmrag index`", file=str(path))
    if fmt == "webqa":
        return load_webqa(path, **common, **kw)
    if fmt == "webqa-tsv":
        _no_extra(kw, fmt, path)
        return load_webqa_tsv(path, **common)
    if fmt == "mmqa":
        return load_mmqa(path, **common, **kw)
    _no_extra(kw, fmt, path)
    return load_samples_jsonl(path, **common)


def _no_extra(kw: dict[str, Any], fmt: str, path: Any) -> None:
    extra = {k: v for k, v in kw.items() if v is not None}
    if extra:
        raise DataError(f"options {sorted(extra)} do not apply to the {fmt} format", file=str(path))
