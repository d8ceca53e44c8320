"""Ranking one question's own candidate pool on the fly (no persistent index), fused as the index fuses."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmrag_rft.data.schema import Candidate
from mmrag_rft.retrieval.embed import TextEmbedder, candidate_text, get_embedder
from mmrag_rft.retrieval.fusion import Hit, fuse_rows
from mmrag_rft.retrieval.layout import RetrievalConfig


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
            from mmrag_rft.data.images import pixels_or_caption
            from mmrag_rft.retrieval.image_encoder import fuse

            rows, imgs = [], []
            for i, c in enumerate(cands):
                if (img := pixels_or_caption(c)) is not None:  # no pixels or unreadable: its caption only
                    imgs.append(img)
                    rows.append(i)
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
    rows_ = fuse_rows(dense_list, bm25_list, cfg.rrf_k, top_n)
    return [Hit(id=cands[r].id, score=s, dense_rank=dr, bm25_rank=br, candidate=cands[r], dense_score=ds,
                bm25_score=bs) for r, s, dr, br, ds, bs in rows_]


_POOL_ENCODERS: dict[tuple[str, str], Any] = {}


def _pool_image_encoder(name: str, emb: TextEmbedder) -> Any:
    from mmrag_rft.retrieval.image_encoder import load_image_encoder

    key = (name, emb.name)
    if key not in _POOL_ENCODERS:
        _POOL_ENCODERS[key] = load_image_encoder(name, emb)
    return _POOL_ENCODERS[key]


def pool_from_index(sample: Any, index: Any, top_n: int = 20) -> tuple[Any, int]:
    """`sample` with the index's top `top_n` for its question as its candidate pool, in the retriever's order, and
    how many of its gold pieces that search missed: those are added at the end (a pool holds its gold, as
    WebQA's do), so training finds its positives. A sample with a pool of its own is returned as it is."""
    import dataclasses

    if sample.candidates:
        return sample, 0
    pool = [h.candidate for h in index.search(sample.question, top_n=top_n)]
    found = {c.id for c in pool}
    missed = [g for g in dict.fromkeys(sample.gold_ids) if g not in found]
    return dataclasses.replace(sample, candidates=pool + [index.get(g) for g in missed]), len(missed)
