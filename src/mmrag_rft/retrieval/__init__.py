"""Retrieval: a persistent hybrid index (dense sentence embeddings in faiss + BM25, reciprocal-rank fusion) and
on-the-fly ranking of a question's own candidate pool. Images are retrieved through their captions, optionally
fused with an offline ImageNet-classifier "pseudo-CLIP" vector."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "RetrievalConfig": "index", "HybridIndex": "index", "Hit": "index", "IndexManifest": "index",
    "IndexLoadError": "index", "build_index": "index", "rank_pool": "index", "reciprocal_rank_fusion": "index",
    "corpus_hash": "index", "TextEmbedder": "embed", "get_embedder": "embed", "candidate_text": "embed",
    "BM25Index": "bm25", "ImageEncoder": "image_encoder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: importing the package must not load faiss or torch
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"mmrag_rft.retrieval.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
