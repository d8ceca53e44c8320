"""Retrieval: a persistent hybrid index (dense sentence embeddings in faiss + BM25, reciprocal-rank fusion) and
on-the-fly ranking of a question's own candidate pool. Images are retrieved through their captions, optionally
fused with an offline ImageNet-classifier "pseudo-CLIP" vector."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "RetrievalConfig": "layout", "HybridIndex": "index", "Hit": "fusion", "IndexManifest": "layout",
    "IndexLoadError": "layout", "IndexCorruptError": "layout", "build_index": "build", "rank_pool": "pool",
    "reciprocal_rank_fusion": "fusion", "corpus_hash": "layout", "TextEmbedder": "embed", "get_embedder": "embed", "candidate_text": "embed",
    "BM25Index": "bm25", "ImageEncoder": "image_encoder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: importing the package must not load faiss or torch
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"mmrag_rft.retrieval.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
