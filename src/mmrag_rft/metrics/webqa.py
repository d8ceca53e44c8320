"""WebQA's official metrics, re-implemented: QA-Acc per question category, retrieval P/R/F1, optional QA-FL.

Follows WebQnA/WebQA_Baseline `vlp/eval_1022.py` (the script behind the published numbers):
- normalisation: lowercase; strip punctuation except a decimal point; drop articles (not for one-word
  inputs); number words -> digits one word at a time; lemmatise (spaCy there; pluggable here, see
  `metrics.text`); a one-character input is only lowercased and number-converted.
- QA-Acc: color / shape / YesNo -> F1 between the *sets* of domain words found in prediction and reference;
  number -> F1 between the bags of integers; every other category -> recall of the reference's bag of words.
  F1 = 2PR / (P + R + 1e-5) exactly as the official script (so a perfect match scores 0.999995).
- the reference is `Keywords_A` (image queries); text queries carry "TBD" there, so their answers `A` are
  used instead (max over the list).
- QA-FL: BARTScore (bart-large-cnn + ParaBank weights) of prediction given reference, divided by the
  reference's own score, capped at 1. Optional: needs weights that are not shipped.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from mmrag_rft.metrics.ranking import set_prf
from mmrag_rft.metrics.text import lemmatize, lemmatizer_name, word_to_num

COLOR_SET = frozenset({
    "orangebrown", "spot", "yellow", "blue", "rainbow", "ivory", "brown", "gray", "teal", "bluewhite",
    "orangepurple", "black", "white", "gold", "redorange", "pink", "blonde", "tan", "turquoise", "grey",
    "beige", "golden", "orange", "bronze", "maroon", "purple", "bluere", "red", "rust", "violet",
    "transparent", "yes", "silver", "chrome", "green", "aqua",
})
SHAPE_SET = frozenset({
    "globular", "octogon", "ring", "hoop", "octagon", "concave", "flat", "wavy", "shamrock", "cross",
    "cylinder", "cylindrical", "pentagon", "point", "pyramidal", "crescent", "rectangular", "hook", "tube",
    "cone", "bell", "spiral", "ball", "convex", "square", "arch", "h", "cuboid", "step", "rectangle", "dot",
    "oval", "circle", "star", "crosse", "crest", "octagonal", "cube", "triangle", "semicircle", "domeshape",
    "obelisk", "corkscrew", "curve", "circular", "xs", "slope", "pyramid", "round", "bow", "straight",
    "triangular", "heart", "fork", "teardrop", "fold", "curl", "spherical", "diamond", "keyhole", "conical",
    "dome", "sphere", "bellshaped", "rounded", "hexagon", "flower", "globe", "torus",
})
YESNO_SET = frozenset({"yes", "no"})
NUMBER = "NUMBER"

DOMAINS: dict[str, Any] = {"color": COLOR_SET, "shape": SHAPE_SET, "YesNo": YESNO_SET, "number": NUMBER}
F1_CATEGORIES = frozenset({"color", "shape", "number", "YesNo"})
CATEGORIES = ("YesNo", "choose", "color", "shape", "number", "Others", "text")  # official report order
F1_EPS = 1e-5

_EXCLUDE = set(string.punctuation) - {"."}
_NON_DECIMAL_DOT = re.compile(r"\.(?!\d)")


def _to_num(word: str) -> str:
    if word == "point":
        return word
    try:
        return str(word_to_num(word))
    except ValueError:
        return word


def _ws_fix(text: str) -> str:
    return " ".join(_to_num(w) for w in text.split())


def _remove_punc(text: str) -> str:
    return _NON_DECIMAL_DOT.sub("", "".join(ch for ch in text if ch not in _EXCLUDE))


def normalize_text(s: str) -> str:
    """The official `normalize_text` (eval_1022.py), with the pluggable lemmatiser."""
    s = s if isinstance(s, str) else str(s)
    if len(s.strip()) == 1:
        return _ws_fix(s.lower())
    if len(s.strip().split()) == 1:
        return lemmatize(_ws_fix(_remove_punc(s.lower())))
    return lemmatize(_ws_fix(re.sub(r"\b(a|an|the)\b", " ", _remove_punc(s.lower()))))


def detect_numbers(words: Iterable[str]) -> list[str]:
    out = []
    for w in words:
        try:
            out.append(str(int(w)))
        except ValueError:
            pass
    return out


def vqa_prf(prediction: str, reference: str, domain: Any = None, *,
            domain_fallback: bool = False) -> tuple[float, float, float]:
    """(F1, recall, precision) of one prediction against one reference, as `compute_vqa_metrics`.

    `domain_fallback` (RagVL's variant, off for official scores): when the reference holds no word of the
    domain vocabulary, compare the full bags instead of scoring 0.
    """
    bow_p = normalize_text(prediction).split()
    bow_r = normalize_text(reference).split()
    if domain == NUMBER:
        dp, dr = detect_numbers(bow_p), detect_numbers(bow_r)
    elif domain is not None:
        dp, dr = list(domain.intersection(bow_p)), list(domain.intersection(bow_r))
    else:
        dp, dr = bow_p, bow_r
    if domain is not None and domain_fallback and not dr:
        dp, dr = bow_p, bow_r
    same = sum((Counter(dr) & Counter(dp)).values())
    if same == 0:
        return 0.0, 0.0, 0.0
    precision, recall = same / len(dp), same / len(dr)
    return 2 * precision * recall / (precision + recall + F1_EPS), recall, precision


def references_for(keywords: str | None, answers: Sequence[str]) -> list[str]:
    """What QA-Acc matches: `Keywords_A` when the benchmark filled it, else the answers."""
    kw = (keywords or "").strip()
    if kw and kw.upper() != "TBD":
        return [kw]
    return [a for a in answers if isinstance(a, str)]


def qa_acc(prediction: str, references: str | Sequence[str], qcate: str, *, domain_fallback: bool = False) -> float:
    """QA-Acc of one answer: F1 (color/shape/YesNo/number) or recall (others), max over references."""
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        return 0.0
    domain = DOMAINS.get(qcate)
    scores = []
    for ref in refs:
        f1, recall, _ = vqa_prf(prediction or "", ref, domain, domain_fallback=domain_fallback)
        scores.append(f1 if qcate in F1_CATEGORIES else recall)
    return max(scores)


def retrieval_prf(predicted: Sequence[str], gold: Sequence[str]) -> tuple[float, float, float]:
    """Per-question (precision, recall, F1) of predicted source ids against the gold positive facts."""
    return set_prf(predicted, gold)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def score_webqa(items: Iterable[dict[str, Any]], *, domain_fallback: bool = False) -> dict[str, Any]:
    """Aggregate WebQA metrics. Each item: qid, qcate, prediction, references (list), and optionally
    pred_sources / gold_sources (retrieval is scored over the items whose gold_sources are non-empty) and
    fluency (a precomputed QA-FL in [0, 1], then QA = mean(FL x Acc) is reported too)."""
    per_q: list[dict[str, Any]] = []
    for it in items:
        cat = str(it.get("qcate") or "")
        acc = qa_acc(it.get("prediction") or "", it.get("references") or [], cat, domain_fallback=domain_fallback)
        row: dict[str, Any] = {"qid": it.get("qid"), "qcate": cat, "qa_acc": acc}
        gold = list(it.get("gold_sources") or [])
        if gold:
            p, r, f = retrieval_prf(list(it.get("pred_sources") or []), gold)
            row.update(retr_p=p, retr_r=r, retr_f1=f)
        if it.get("fluency") is not None:
            row["qa_fl"] = float(it["fluency"])
            row["qa"] = row["qa_fl"] * acc
        per_q.append(row)

    def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(rows), "qa_acc": _mean([r["qa_acc"] for r in rows])}
        retr = [r for r in rows if "retr_f1" in r]
        if retr:
            out.update(n_retrieval=len(retr), retr_p=_mean([r["retr_p"] for r in retr]),
                       retr_r=_mean([r["retr_r"] for r in retr]), retr_f1=_mean([r["retr_f1"] for r in retr]))
        fl = [r for r in rows if "qa_fl" in r]
        if fl:
            out.update(qa_fl=_mean([r["qa_fl"] for r in fl]), qa=_mean([r["qa"] for r in fl]))
        return out

    cats = [c for c in CATEGORIES if any(r["qcate"] == c for r in per_q)]
    cats += sorted({r["qcate"] for r in per_q} - set(cats))
    return {
        "dataset": "webqa", "overall": summary(per_q),
        "per_category": {c: summary([r for r in per_q if r["qcate"] == c]) for c in cats},
        "per_question": per_q, "lemmatizer": lemmatizer_name(), "domain_fallback": domain_fallback,
    }


# --- QA-FL (BARTScore), optional ---------------------------------------------------------------------------------

class FluencyUnavailable(RuntimeError):
    """QA-FL needs BARTScore weights that are not shipped."""


_BART_TABLE = str.maketrans(dict.fromkeys(string.punctuation))


def normalize_for_bart(x: str) -> str:
    return " ".join(x.translate(_BART_TABLE).split())


def qa_fluency(predictions: Sequence[str], references: Sequence[Sequence[str]], *, checkpoint: str | None = None,
               parabank: str | None = None, device: str = "cpu") -> list[float]:
    """Official QA-FL: min(1, max_i exp(s(A_i -> c)) / exp(s(A_i -> A_i))), s = BARTScore (mean token
    log-likelihood of the target given the source under bart-large-cnn, with the ParaBank fine-tune)."""
    if not checkpoint:
        raise FluencyUnavailable(
            "QA-FL (BARTScore) needs the facebook/bart-large-cnn weights as a local Hugging Face folder "
            "(and, for the official numbers, BARTScore's ParaBank fine-tune 'bart.pth'); none is shipped and "
            "nothing is downloaded: pass checkpoint=DIR (CLI: --bart-checkpoint DIR [--bart-parabank FILE])")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoTokenizer, BartForConditionalGeneration

    try:
        tok = AutoTokenizer.from_pretrained(checkpoint)
        model = BartForConditionalGeneration.from_pretrained(checkpoint, use_kernels=False).to(device).eval()
    except OSError as e:
        raise FluencyUnavailable(f"QA-FL: cannot load BART weights from {checkpoint!r} ({e})") from None
    if parabank:
        model.load_state_dict(torch.load(parabank, map_location=device))

    @torch.no_grad()
    def score(src: str, tgt: str) -> float:
        enc = tok(src, max_length=1024, truncation=True, return_tensors="pt").to(device)
        lab = tok(tgt, max_length=1024, truncation=True, return_tensors="pt").input_ids.to(device)
        return -float(model(**enc, labels=lab).loss)

    out = []
    for cand, refs in zip(predictions, references):
        c = normalize_for_bart(cand or "")
        best = 0.0
        for a in refs:
            a_n = normalize_for_bart(a)
            best = max(best, math.exp(score(a_n, c)) / math.exp(score(a_n, a_n)))
        out.append(min(1.0, best))
    return out
