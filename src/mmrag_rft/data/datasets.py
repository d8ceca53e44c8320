"""The benchmarks by name, nanochat's task-per-dataset shape: each registration owns how its files are recognised and
read, which loader options they take, which metrics score it and which metric the answer reward uses. A new dataset
is one `register_dataset` call; loaders, `evaluate`, `ablate`, `score` and the rewards read it. An unknown name is an
error, never WebQA by default."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from mmrag_rft.data.jsonl import load_samples_jsonl
from mmrag_rft.data.mmqa import load_mmqa
from mmrag_rft.data.schema import Sample
from mmrag_rft.data.webqa import load_webqa, load_webqa_tsv

Loader = Callable[..., Iterator[Sample]]  # loader(path, *, skip_bad, report, limit, **options)
MetricSet = Literal["webqa", "mmqa"]  # webqa: category-aware QA-Acc + source P/R/F1; mmqa: list EM / F1
AnswerMetric = Literal["webqa", "f1", "em"]  # what rewards.answer_score uses under `answer_metric: auto`


@dataclass(frozen=True)
class Reader:
    """One file format of a dataset: the name `detect_format` gives it, its loader and the options that loader takes.
    `detect(first_json_object)` claims a JSON-lines/JSON file by its first object (None: only by `--format`)."""

    format: str
    load: Loader
    options: frozenset[str] = frozenset()
    detect: Callable[[dict[str, Any]], bool] | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    metric_set: MetricSet
    answer_metric: AnswerMetric
    readers: tuple[Reader, ...] = ()

    @property
    def loader_options(self) -> frozenset[str]:
        return frozenset().union(*(r.options for r in self.readers))


DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> None:
    """Make `dataset` known by name (and its readers by format); a later registration of a name replaces it."""
    DATASETS[dataset.name] = dataset


def get_dataset(name: str) -> Dataset:
    """The registration of `name`; ValueError naming the registered ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(DATASETS)}") from None


def readers() -> dict[str, tuple[Dataset, Reader]]:
    """Every registered file format -> (its dataset, its reader), in registration order."""
    return {r.format: (d, r) for d in DATASETS.values() for r in d.readers}


def detect_dataset_format(obj: dict[str, Any]) -> str | None:
    """The format whose reader claims this first JSON object; the most recent registration is asked first, so a
    user's dataset can claim a shape before the built-in catch-alls."""
    for fmt, (_, reader) in reversed(list(readers().items())):
        if reader.detect is not None and reader.detect(obj):
            return fmt
    return None


def _is_mmqa(obj: dict[str, Any]) -> bool:
    md = obj.get("metadata")
    return "qid" in obj and "question" in obj and (
        "supporting_context" in obj or (isinstance(md, dict) and ("image_doc_ids" in md or "text_doc_ids" in md)))


def _is_webqa(obj: dict[str, Any]) -> bool:
    vals = list(obj.values())[:3]
    return bool(vals) and all(isinstance(v, dict) for v in vals) and any(("Q" in v or "Guid" in v) for v in vals)


def _is_samples_jsonl(obj: dict[str, Any]) -> bool:
    return "qid" in obj and "question" in obj and not _is_mmqa(obj)


# The built-in shapes do not overlap (jsonl's catch-all leaves MMQA's rows to it), so their order does not matter;
# a dataset registered later is asked first.
register_dataset(Dataset(
    "webqa", "WebQA (JSON or the val query TSVs)", metric_set="webqa", answer_metric="webqa",
    readers=(Reader("webqa", load_webqa, frozenset({"images_tsv", "images_lineidx", "split", "shuffle"}), _is_webqa),
             Reader("webqa-tsv", load_webqa_tsv))))  # the TSVs are recognised by their header line (loaders.py)
register_dataset(Dataset(
    "mmqa", "MultimodalQA (jsonl + texts/tables/images files)", metric_set="mmqa", answer_metric="f1",
    readers=(Reader("mmqa", load_mmqa, frozenset({"texts", "tables", "images", "image_dir"}), _is_mmqa),)))
register_dataset(Dataset(
    "jsonl", "this project's JSONL samples, scored with WebQA's metrics (QA-Acc by category, source F1)",
    metric_set="webqa", answer_metric="f1", readers=(Reader("jsonl", load_samples_jsonl, detect=_is_samples_jsonl),)))


def load_with(fmt: str, path: str | os.PathLike[str], **kw: Any) -> Iterator[Sample]:
    """Samples from `path` read by the reader registered for format `fmt`."""
    return readers()[fmt][1].load(path, **kw)
