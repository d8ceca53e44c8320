"""Point-wise (stage-1) judgement metrics: a yes/no decision per (question, candidate) against the gold label."""

from __future__ import annotations

from collections.abc import Sequence


def binary_metrics(pred: Sequence[bool | None], gold: Sequence[bool]) -> dict[str, float]:
    """Accuracy / precision / recall / F1 of the positive class; an unreadable prediction (None) counts as wrong."""
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions but {len(gold)} labels")
    tp = sum(1 for p, g in zip(pred, gold) if p is True and g)
    fp = sum(1 for p, g in zip(pred, gold) if p is True and not g)
    fn = sum(1 for p, g in zip(pred, gold) if p is not True and g)
    correct = sum(1 for p, g in zip(pred, gold) if p is not None and p == g)
    n = len(gold)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"accuracy": correct / n if n else 0.0, "precision": prec, "recall": rec, "f1": f1, "n": n}
