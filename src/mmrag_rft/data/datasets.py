"""The benchmarks by name: each registration says which metrics score it and which loader options it takes, so a new
dataset is one `register_dataset` line (plus its loader) and everything else reads it. An unknown name is an error,
never WebQA by default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    metric_set: Literal["webqa", "mmqa"]  # webqa: category-aware QA-Acc + source P/R/F1; mmqa: list EM / F1
    loader_options: frozenset[str] = frozenset()  # extra keywords its loader takes (`load_samples(**kw)`)


DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset) -> None:
    DATASETS[dataset.name] = dataset


def get_dataset(name: str) -> Dataset:
    """The registration of `name`; ValueError naming the registered ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; registered: {', '.join(DATASETS)}") from None


register_dataset(Dataset("webqa", "WebQA (JSON or the val query TSVs)", "webqa",
                         frozenset({"images_tsv", "images_lineidx", "split", "shuffle"})))
register_dataset(Dataset("mmqa", "MultimodalQA (jsonl + texts/tables/images files)", "mmqa",
                         frozenset({"texts", "tables", "images", "image_dir"})))
register_dataset(Dataset("jsonl", "this project's JSONL samples, scored with WebQA's metrics (QA-Acc by category, "
                                  "source F1)", "webqa"))
