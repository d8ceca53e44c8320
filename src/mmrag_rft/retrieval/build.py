"""Building an index: candidates streamed into a temporary folder beside the target, renamed into place at the end, so
a crash mid-build leaves the previous index (or nothing) rather than half an index."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from array import array
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from mmrag_rft.config import atomic_write_text
from mmrag_rft.data.schema import Candidate
from mmrag_rft.retrieval.embed import TextEmbedder, canonical_name, candidate_text, get_embedder
from mmrag_rft.retrieval.layout import (BM25_DIR, CANDIDATES, DENSE, IDS, IMAGES, INDEX_FORMAT, MANIFEST, OFFSETS,
                                        IndexLoadError, IndexManifest, RetrievalConfig, _as_candidate, _checked_files,
                                        _CorpusHasher, file_sha256)

log = logging.getLogger(__name__)


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
        from mmrag_rft.data.images import open_image
        from mmrag_rft.retrieval.image_encoder import fuse

        rows, imgs = [], []
        for i, px in pixels:
            try:
                imgs.append(open_image(px))
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
    from mmrag_rft.config import current_umask, replace_dir

    mask = current_umask()
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700: an index built by one account is served by another
    for sub in tmp.rglob("*"):
        if sub.is_dir():
            os.chmod(sub, 0o777 & ~mask)
    replace_dir(tmp, out)
