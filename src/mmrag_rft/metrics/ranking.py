"""Ranking metrics with binary relevance: a ranked list of ids against a set of gold ids.

Duplicates in the ranking count once (at their first position); k=None means the whole list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def _dedup(ranked: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for r in ranked:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def _cut(ranked: Sequence[str], k: int | None) -> list[str]:
    r = _dedup(ranked)
    return r if k is None else r[: max(0, k)]


def recall_at_k(ranked: Sequence[str], gold: Iterable[str], k: int | None = None) -> float:
    g = set(gold)
    if not g:
        return 0.0
    return len(set(_cut(ranked, k)) & g) / len(g)


def precision_at_k(ranked: Sequence[str], gold: Iterable[str], k: int | None = None) -> float:
    """Hits in the top k over k (over the list length when k is None or the list is shorter than k: the
    ranking chose to stop, so missing slots are not counted as misses)."""
    top = _cut(ranked, k)
    if not top:
        return 0.0
    return len(set(top) & set(gold)) / len(top)


def dcg_at_k(ranked: Sequence[str], gold: Iterable[str], k: int | None = None) -> float:
    g = set(gold)
    return sum(1.0 / math.log2(i + 2) for i, r in enumerate(_cut(ranked, k)) if r in g)


def ndcg_at_k(ranked: Sequence[str], gold: Iterable[str], k: int | None = None) -> float:
    """DCG (gain 1 per relevant id, discount log2(rank+1)) over the ideal DCG of min(|gold|, k) hits."""
    g = set(gold)
    if not g:
        return 0.0
    n_ideal = len(g) if k is None else min(len(g), k)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(n_ideal))
    return dcg_at_k(ranked, g, k) / ideal if ideal > 0 else 0.0


def mrr(ranked: Sequence[str], gold: Iterable[str], k: int | None = None) -> float:
    g = set(gold)
    for i, r in enumerate(_cut(ranked, k)):
        if r in g:
            return 1.0 / (i + 1)
    return 0.0


def set_prf(predicted: Iterable[str], gold: Iterable[str]) -> tuple[float, float, float]:
    """(precision, recall, F1) of the predicted id set against the gold set."""
    p, g = set(predicted), set(gold)
    hits = len(p & g)
    if hits == 0:
        return 0.0, 0.0, 0.0
    prec, rec = hits / len(p), hits / len(g)
    return prec, rec, 2 * prec * rec / (prec + rec)


def ranking_report(rankings: Sequence[Sequence[str]], golds: Sequence[Iterable[str]],
                   ks: Sequence[int] = (1, 2, 5, 10)) -> dict[str, float]:
    """Means over questions of R@k, P@k, NDCG@k for each k, and MRR."""
    golds = [set(g) for g in golds]
    n = len(rankings)
    out: dict[str, float] = {"n": float(n)}
    if n == 0:
        return out
    for k in ks:
        out[f"recall@{k}"] = sum(recall_at_k(r, g, k) for r, g in zip(rankings, golds)) / n
        out[f"precision@{k}"] = sum(precision_at_k(r, g, k) for r, g in zip(rankings, golds)) / n
        out[f"ndcg@{k}"] = sum(ndcg_at_k(r, g, k) for r, g in zip(rankings, golds)) / n
    out["mrr"] = sum(mrr(r, g) for r, g in zip(rankings, golds)) / n
    return out


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half); None without both.

    Threshold-free, so it measures what a stage-1 model's P(yes) can separate even when its calibration
    (the 0.5 cut) is off — the coarse filter picks its own threshold or top-k anyway.
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
