"""One entry point for every sample format, with detection from the file's content (never its name alone)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mmrag_rft.data.datasets import detect_dataset_format, load_with, readers
from mmrag_rft.data.jsonl import read_head
from mmrag_rft.data.schema import MODALITIES, Candidate, DataError, Sample

FIRST_LINE_LIMIT = 16 * 1024 * 1024  # a JSONL row longer than this is sniffed by the regex alone

_WEBQA_KEYS = re.compile(r'"(Qcate|Guid|img_posFacts|txt_posFacts|img_Facts|txt_Facts)"\s*:')


def formats() -> tuple[str, ...]:
    """What `--format` takes: auto plus every registered dataset's file formats."""
    return ("auto", *readers())


def detected_formats() -> tuple[str, ...]:
    """What detect_format can say: the registered sample formats plus "corpus" (our candidate-per-line file)."""
    return (*readers(), "corpus")


def demo_corpus_dir() -> Path:
    """The demo corpus installed with the package (corpus.jsonl, questions.jsonl, images/)."""
    return Path(__file__).resolve().parent.parent / "demo_corpus"


def _classify_object(obj: dict[str, Any]) -> str | None:
    kind = detect_dataset_format(obj)
    if kind is None and "id" in obj and "modality" in obj:
        return "corpus"
    return kind


def detect_format(path: str | os.PathLike[str]) -> str:
    """A registered format ('webqa' | 'webqa-tsv' | 'mmqa' | 'jsonl' | a user's) or 'corpus', from the first 64 KB,
    or the whole first line where that is longer (gzip or not)."""
    p = Path(path)
    head = read_head(p)
    stripped = head.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise DataError("empty file", file=str(p))
    if "\n" not in stripped and len(head) == 65536:  # a first line longer than the sniffed head: read it whole
        head = read_head(p, FIRST_LINE_LIMIT)
        stripped = head.lstrip("\ufeff \t\r\n")
    first_line = stripped.split("\n", 1)[0]
    if first_line.startswith("Guid\t") or ("\t" in first_line and "Qcate" in first_line.split("\t")):
        return "webqa-tsv"
    if stripped[0] == "{":
        if "\n" in stripped or len(head) < FIRST_LINE_LIMIT:
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


def load_samples(path: str | os.PathLike[str], format: str = "auto", *, skip_bad: bool = False,
                 report: list[DataError] | None = None, limit: int | None = None, **kw: Any) -> Iterator[Sample]:
    """Stream samples from any registered format (data/datasets.py).

    Every malformed row raises a DataError naming file, row (line number or Guid) and field; with
    `skip_bad` it is appended to `report` and logged instead. Extra keywords go to the format's loader
    (WebQA: images_tsv, images_lineidx, split, shuffle; MMQA: texts, tables, images, image_dir).
    """
    if format not in formats():
        raise DataError(f"unknown format {format!r}; expected one of {list(formats())}", file=str(path))
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "webqa" and format == "webqa" and detect_format(path) == "webqa-tsv":
        fmt = "webqa-tsv"  # the val query TSVs are WebQA too
    if fmt == "corpus":
        raise DataError("this is a corpus file (one candidate per line), not a samples file; "
                        "index it with `mmrag index`", file=str(path))
    return load_with(fmt, path, skip_bad=skip_bad, report=report, limit=limit, **_options_for(kw, fmt, path))


def _options_for(kw: dict[str, Any], fmt: str, path: Any) -> dict[str, Any]:
    """Drop unset (None) options; an option set for a format that has no use for it is an error, not ignored."""
    given = {k: v for k, v in kw.items() if v is not None}
    extra = sorted(set(given) - readers()[fmt][1].options)
    if extra:
        raise DataError(f"options {extra} do not apply to the {fmt} format", file=str(path))
    return given


def _spread(xs: list[int]) -> dict[str, float | int]:
    if not xs:
        return {"mean": 0.0, "min": 0, "max": 0, "total": 0}
    return {"mean": round(sum(xs) / len(xs), 4), "min": min(xs), "max": max(xs), "total": sum(xs)}


def summarize(samples: Iterable[Sample]) -> dict[str, Any]:
    """Counts `mmrag data stats` prints: pool sizes overall and by modality, gold per sample, categories."""
    n_cands: list[int] = []
    by_mod: dict[str, list[int]] = {m: [] for m in MODALITIES}
    gold: list[int] = []
    gold_mod: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    datasets: Counter[str] = Counter()
    pixels = no_pool = no_gold = with_answers = 0
    for s in samples:
        n_cands.append(len(s.candidates))
        mods = Counter(c.modality for c in s.candidates)
        for m in MODALITIES:
            by_mod[m].append(mods.get(m, 0))
        gold.append(len(s.gold_ids))
        if s.candidates:
            for g in s.gold_ids:
                gold_mod[s.candidate(g).modality] += 1
        else:
            no_pool += 1
        no_gold += not s.gold_ids
        with_answers += bool(s.answers)
        pixels += sum(c.has_pixels for c in s.candidates)
        cats[s.category or "(none)"] += 1
        datasets[s.dataset or "(none)"] += 1
    return {
        "samples": len(n_cands),
        "candidates_per_sample": _spread(n_cands),
        "candidates_by_modality": {m: _spread(v) for m, v in by_mod.items()},
        "gold_per_sample": _spread(gold),
        "gold_by_modality": {m: gold_mod.get(m, 0) for m in MODALITIES},
        "samples_without_candidates": no_pool,
        "samples_without_gold": no_gold,
        "samples_with_answers": with_answers,
        "image_candidates_with_pixels": pixels,
        "categories": dict(cats.most_common()),
        "datasets": dict(datasets.most_common()),
    }


def summarize_corpus(candidates: Iterable[Candidate]) -> dict[str, Any]:
    """Counts for a corpus file: candidates by modality, how many images have reachable pixels."""
    mods: Counter[str] = Counter()
    pixels = missing = 0
    for c in candidates:
        mods[c.modality] += 1
        if c.image_bytes is not None or (c.image_path and os.path.isfile(c.image_path)):
            pixels += 1
        elif c.image_path:
            missing += 1
    return {"candidates": sum(mods.values()), "by_modality": {m: mods.get(m, 0) for m in MODALITIES},
            "images_with_pixels": pixels, "image_files_missing": missing}
