"""Reciprocal-rank fusion of the dense and BM25 lists, and the ranked hit both the index and the pool ranker return."""

from __future__ import annotations

from typing import Any, Hashable, Sequence

from mmrag_rft.data.schema import Candidate


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


def fuse_rows(dense: list[tuple[int, float]], bm25: list[tuple[int, float]], rrf_k: int,
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
