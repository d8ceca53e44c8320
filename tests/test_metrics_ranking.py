from __future__ import annotations

import math

import pytest

from mmrag_rft.metrics.ranking import (
    dcg_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    ranking_report,
    recall_at_k,
    set_prf,
)

L3, L4 = 1 / math.log2(3), 1 / math.log2(4)  # discounts at ranks 2 and 3


def test_ndcg_by_hand():
    ranked, gold = ["c3", "c1", "c5", "c2"], {"c1", "c5"}
    # DCG = 0 + 1/log2(3) + 1/log2(4); IDCG = 1 + 1/log2(3)
    assert dcg_at_k(ranked, gold) == pytest.approx(L3 + 0.5)
    assert ndcg_at_k(ranked, gold) == pytest.approx((L3 + 0.5) / (1 + L3))
    assert ndcg_at_k(ranked, gold) == pytest.approx(0.693426, abs=1e-6)
    assert ndcg_at_k(ranked, gold, k=2) == pytest.approx(L3 / (1 + L3))
    assert ndcg_at_k(ranked, gold, k=1) == 0.0
    assert ndcg_at_k(["c1"], gold, k=5) == pytest.approx(1 / (1 + L3))  # ideal has both hits
    assert ndcg_at_k(["c1", "c1", "c5"], gold) == 1.0  # a repeat counts once
    assert ndcg_at_k([], gold) == 0.0 and ndcg_at_k(["x"], set()) == 0.0


def test_recall_precision_mrr():
    ranked, gold = ["a", "b", "c", "d"], ["b", "d", "z"]
    assert recall_at_k(ranked, gold, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, gold) == pytest.approx(2 / 3)
    assert precision_at_k(ranked, gold, 2) == 0.5
    assert precision_at_k(ranked, gold, 10) == 0.5  # 2 hits over the 4 listed
    assert precision_at_k([], gold, 3) == 0.0
    assert mrr(ranked, gold) == 0.5 and mrr(ranked, gold, k=1) == 0.0 and mrr(["q"], gold) == 0.0
    assert set_prf(["a", "b", "d"], ["b", "d", "z", "y"]) == pytest.approx((2 / 3, 0.5, 4 / 7))
    assert set_prf(["a"], ["b"]) == (0.0, 0.0, 0.0)


def test_report_means():
    rep = ranking_report([["a", "b"], ["x", "y"]], [["b"], ["x"]], ks=(1,))
    assert rep["n"] == 2 and rep["recall@1"] == 0.5 and rep["precision@1"] == 0.5
    assert rep["mrr"] == pytest.approx((0.5 + 1) / 2) and rep["ndcg@1"] == 0.5

def test_roc_auc_counts_ordered_pairs_and_half_ties():
    from mmrag_rft.metrics.ranking import roc_auc

    assert roc_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    # pos 0.5 vs negs (0.5 tie, 0.4 win): (0.5 + 1) / 2
    assert roc_auc([0.5, 0.5, 0.4], [True, False, False]) == 0.75
    assert roc_auc([0.3, 0.4], [True, True]) is None


def test_roc_auc_matches_brute_force():
    import random

    from mmrag_rft.metrics.ranking import roc_auc

    rng = random.Random(0)
    s = [round(rng.random(), 1) for _ in range(60)]
    y = [rng.random() < 0.4 for _ in range(60)]
    pos = [a for a, l in zip(s, y) if l]
    neg = [a for a, l in zip(s, y) if not l]
    brute = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))
    assert abs(roc_auc(s, y) - brute) < 1e-12


def test_binary_metrics_count_unreadable_as_wrong():
    from mmrag_rft.metrics.classification import binary_metrics

    m = binary_metrics([True, False, None, True], [True, False, True, False])
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    with pytest.raises(ValueError):
        binary_metrics([True], [True, False])
