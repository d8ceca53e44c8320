"""The index folder: its files, manifest, checksums and errors, and the corpus hash that says whether it is current.

On disk (one folder, self-contained for serving):
    manifest.json     what built it (embedder, dims, count, corpus hash, config, format and package version)
    candidates.jsonl  one candidate per line, without pixels; `offsets.npy` gives each line's byte offset
    ids.json          candidate ids in row order (row i = line i = faiss vector i = BM25 document i)
    dense.faiss       IndexFlatIP over L2-normalised embeddings (inner product = cosine)
    bm25/             bm25s matrix and tokenizer vocabulary
    images/           copies of the candidates' image files (and WebQA-style inline bytes written out)
The folder is built under a temporary name beside the target and renamed into place at the end, so a crash
mid-build leaves the previous index (or nothing) rather than half an index.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from mmrag_rft.data.schema import Candidate

INDEX_FORMAT = 1
MANIFEST = "manifest.json"
CANDIDATES = "candidates.jsonl"
OFFSETS = "offsets.npy"
IDS = "ids.json"
DENSE = "dense.faiss"
BM25_DIR = "bm25"
IMAGES = "images"


class IndexLoadError(ValueError):
    """The index folder is missing, incomplete, stale or was built for another embedder; the message says which
    file and what to do (rebuild with `mmrag index`)."""


class IndexCorruptError(RuntimeError):
    """An index file's content is damaged (checksum, unreadable record, wrong id, NaN vectors). A RuntimeError, not
    a ValueError: it is the server's fault, never the request's (HTTP 500, logged)."""


VERIFY_ON_LOAD_BYTES = 64 * 1024 * 1024  # files up to this size are checksummed on every load; all by `verify`


@dataclass
class RetrievalConfig:
    embedder: str = "default"  # bundled all-MiniLM-L6-v2; or any sentence-transformers folder / cached hub id
    use_dense: bool = True
    use_bm25: bool = True
    rrf_k: int = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
    fusion_depth: int = 100  # how deep each retriever's list goes into the fusion
    batch_size: int = 256  # candidates per build batch (embedding, tokenising, writing)
    image_encoder: str | None = None  # "efficientnet-lite0": pseudo-CLIP image vectors fused with captions
    image_weight: float = 0.3  # share of the image vector in a fused image candidate (0 = caption only)
    copy_images: bool = True  # copy image files into the index (self-contained) instead of referencing them

    def __post_init__(self) -> None:
        if not (self.use_dense or self.use_bm25):
            raise ValueError("at least one of use_dense / use_bm25 must be true")
        if self.rrf_k < 0 or self.fusion_depth < 1 or self.batch_size < 1:
            raise ValueError("rrf_k must be >= 0, fusion_depth and batch_size >= 1")
        if not 0.0 <= self.image_weight <= 1.0:
            raise ValueError(f"image_weight must be within [0, 1], got {self.image_weight}")


@dataclass
class IndexManifest:
    format_version: int
    package_version: str
    embedder: str | None
    dim: int
    count: int
    corpus_hash: str
    created: str
    config: dict[str, Any]
    image_encoder: str | None = None
    num_images: int = 0
    num_image_vectors: int = 0
    files: dict[str, int] = field(default_factory=dict)  # file -> size in bytes, to detect tampering/staleness
    sha256: dict[str, str] = field(default_factory=dict)  # file (relative, BM25 files too) -> content checksum

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexManifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class _CorpusHasher:
    """sha256 over every candidate's id, modality, title and text (what retrieval sees), in order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, c: Candidate) -> None:
        for part in (c.id, c.modality, c.title, c.text):
            self._h.update(part.encode("utf-8"))
            self._h.update(b"\x00")
        self._h.update(b"\x01")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _as_candidate(c: Any, i: int) -> Candidate:
    if isinstance(c, Candidate):
        return c
    if isinstance(c, dict):
        return Candidate.from_dict(c)
    raise TypeError(f"corpus item {i}: expected a Candidate, got {type(c).__name__}")


def _unique(candidates: Iterable[Any]) -> Iterator[Candidate]:
    """First occurrence of each id wins (benchmark pools repeat candidates across questions)."""
    seen: set[str] = set()
    for i, c in enumerate(candidates):
        c = _as_candidate(c, i)
        if c.id in seen:
            continue
        seen.add(c.id)
        yield c


def corpus_hash(candidates: Iterable[Any]) -> str:
    h = _CorpusHasher()
    for c in _unique(candidates):
        h.update(c)
    return h.hexdigest()


def _checked_files(d: Path) -> list[str]:
    """The files a manifest checksums: every file of the index but the manifest and the copied images."""
    names = [n for n in (CANDIDATES, OFFSETS, IDS, DENSE) if (d / n).is_file()]
    if (d / BM25_DIR).is_dir():
        names += sorted(f"{BM25_DIR}/{f.name}" for f in (d / BM25_DIR).iterdir() if f.is_file())
    return names


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksums(d: Path, m: IndexManifest, *, all_files: bool) -> list[str]:
    """Compare the files with the manifest's sha256 (small ones only unless `all_files`); returns those checked."""
    checked = []
    for name, want in (m.sha256 or {}).items():
        f = d / name
        if not f.is_file():
            raise IndexLoadError(f"{f}: missing; the index is incomplete (rebuild it)")
        if not all_files and f.stat().st_size > VERIFY_ON_LOAD_BYTES:
            continue
        if file_sha256(f) != want:
            raise IndexCorruptError(f"{f}: content does not match its checksum in {MANIFEST}; the index is corrupt "
                                    "(rebuild it)")
        checked.append(name)
    return checked
