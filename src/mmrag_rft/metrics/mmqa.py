"""MultimodalQA's official metric, re-implemented: DROP-style list EM and list F1.

Follows allenai/multimodalqa `baselines/evaluate.py` (itself DROP's `drop_eval.py` plus number words):
answers are lists of spans; each span is tokenised on spaces and hyphens, lowercased, stripped of
punctuation (numbers keep theirs), numbers (and number words) become floats ("5" -> "5.0"), articles are
dropped; EM compares the sets of normalised spans, F1 aligns the spans' token bags 1:1 (Hungarian assignment)
with a number-match gate and averages, rounded to 2 decimals per question. Scores are reported x100.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from typing import Any

from mmrag_rft.metrics.text import ARTICLES_RE, word_to_num

_EXCLUDE = set(string.punctuation)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _normalize_number(text: str) -> str:
    if _is_number(text):
        return str(float(text))
    try:
        return str(float(word_to_num(text)))
    except ValueError:
        return text


def _normalize_token(token: str) -> str:
    t = token.lower()
    if not _is_number(t):
        t = "".join(ch for ch in t if ch not in _EXCLUDE)
    return " ".join(ARTICLES_RE.sub(" ", _normalize_number(t)).split())


def normalize_span(text: str) -> str:
    import re

    parts = [_normalize_token(tok) for tok in re.split(" |-", str(text))]
    return " ".join(p for p in parts if p.strip()).strip()


def answer_to_bags(answer: str | Sequence[str]) -> tuple[list[str], list[set[str]]]:
    spans = [answer] if isinstance(answer, str) else list(answer)
    norm = [normalize_span(s) for s in spans]
    return norm, [set(n.split()) for n in norm]


def _bag_f1(pred: set[str], gold: set[str]) -> float:
    inter = len(gold & pred)
    precision = inter / len(pred) if pred else 1.0
    recall = inter / len(gold) if gold else 1.0
    return 0.0 if precision == 0.0 and recall == 0.0 else 2 * precision * recall / (precision + recall)


def _numbers_match(gold: set[str], pred: set[str]) -> bool:
    g = {w for w in gold if _is_number(w)}
    return not g or bool(g & {w for w in pred if _is_number(w)})


def _align_bags(pred: list[set[str]], gold: list[set[str]]) -> list[float]:
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    scores = np.zeros([len(gold), len(pred)])
    for gi, g in enumerate(gold):
        for pi, p in enumerate(pred):
            if _numbers_match(g, p):
                scores[gi, pi] = _bag_f1(p, g)
    rows, cols = linear_sum_assignment(-scores)
    best = np.zeros([max(len(gold), len(pred))])
    for r, c in zip(rows, cols):
        best[r] = max(best[r], scores[r, c])
    return [float(x) for x in best]


def list_em(predicted: str | Sequence[str], gold: str | Sequence[str]) -> float:
    p, g = answer_to_bags(predicted)[0], answer_to_bags(gold)[0]
    return float(set(p) == set(g) and len(p) == len(g))


def list_f1(predicted: str | Sequence[str], gold: str | Sequence[str]) -> float:
    per_bag = _align_bags(answer_to_bags(predicted)[1], answer_to_bags(gold)[1])
    return round(sum(per_bag) / len(per_bag), 2) if per_bag else 0.0


def hop_type(question_type: str) -> str:
    """Single-hop types (TextQ, TableQ, ImageQ, ImageListQ) vs composed ones."""
    return "Multi-modal" if "(" in (question_type or "") else "Single-modal"


def score_mmqa(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Each item: qid, prediction (str or list), gold (list of answer strings = one reference list),
    and optionally qtype (metadata.type) and modality (the answers' modality). A missing prediction
    (None) scores 0, as the official script does."""
    per_q: list[dict[str, Any]] = []
    for it in items:
        pred, gold = it.get("prediction"), list(it.get("gold") or [])
        if pred is None or not gold:
            em = f1 = 0.0
        else:
            em, f1 = list_em(pred, gold), list_f1(pred, gold)
        qtype = str(it.get("qtype") or "")
        per_q.append({"qid": it.get("qid"), "qtype": qtype, "modality": str(it.get("modality") or ""),
                      "hop": hop_type(qtype), "em": em, "f1": f1})

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(rows)
        return {"n": n, "list_em": 100 * sum(r["em"] for r in rows) / n if n else float("nan"),
                "list_f1": 100 * sum(r["f1"] for r in rows) / n if n else float("nan")}

    def by(key: str) -> dict[str, Any]:
        return {k: summary([r for r in per_q if r[key] == k]) for k in sorted({r[key] for r in per_q}) if k}

    return {"dataset": "mmqa", "overall": summary(per_q), "per_modality": by("modality"), "per_hop": by("hop"),
            "per_type": by("qtype"), "per_question": per_q}
