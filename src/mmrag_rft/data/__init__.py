"""Data model and loaders: WebQA, MMQA and our own JSONL all become `Sample`s (see docs/data-format.md)."""

from mmrag_rft.data.loaders import demo_corpus_dir, detect_format, load_samples
from mmrag_rft.data.jsonl import load_corpus, load_samples_jsonl, write_corpus_jsonl, write_samples_jsonl
from mmrag_rft.data.mmqa import load_mmqa
from mmrag_rft.data.schema import MODALITIES, Candidate, DataError, Sample
from mmrag_rft.data.webqa import WebQAImages, load_webqa, load_webqa_tsv

__all__ = [
    "MODALITIES", "Candidate", "DataError", "Sample", "WebQAImages", "demo_corpus_dir", "detect_format",
    "load_corpus", "load_mmqa", "load_samples", "load_samples_jsonl", "load_webqa", "load_webqa_tsv",
    "write_corpus_jsonl", "write_samples_jsonl",
]
