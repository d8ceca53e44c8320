"""Text normalisation shared by the metrics and the rewards: number words, articles, punctuation, lemmas.

The official WebQA and MMQA scripts depend on `word2number` (applied one word at a time) and on spaCy's
`en_core_web_sm` lemmatiser. Word-at-a-time number conversion is a closed vocabulary, so it is re-implemented
here exactly. Lemmatisation is pluggable: spaCy when its English model is installed, else `simplemma` when
installed, else a light built-in rule lemmatiser; `lemmatizer_name()` says which one produced a score.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

ARTICLES_RE = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = set(string.punctuation)

# word2number's american_number_system, minus 'point' (handled by the callers, as the official scripts do).
NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000,
}


def word_to_num(word: str) -> int:
    """`word2number.w2n.word_to_num` restricted to one word (the only way both official scripts call it).

    Digit strings become ints ("007" -> 7), number words their value ("twelve" -> 12, "hundred" -> 100),
    a lone "point" is 0 (w2n drops the decimal separator and sums nothing). Anything else raises ValueError.
    """
    w = word.replace("-", " ").lower()
    if w.isdigit():
        return int(w)  # may raise ValueError for digits int() does not read (e.g. superscripts), as w2n does
    parts = w.split()
    if len(parts) == 1 and parts[0] in NUMBER_WORDS:
        return NUMBER_WORDS[parts[0]]
    if len(parts) == 1 and parts[0] == "point":
        return 0
    raise ValueError(f"not a number word: {word!r}")


def remove_articles(text: str) -> str:
    return ARTICLES_RE.sub(" ", text)


def white_space_fix(text: str) -> str:
    return " ".join(text.split())


def remove_punc(text: str) -> str:
    return "".join(ch for ch in text if ch not in PUNCTUATION)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_f1(prediction: str, reference: str) -> float:
    """Token F1 over SQuAD-normalised bags (with multiplicity)."""
    from collections import Counter

    p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not p or not r:
        return float(p == r)
    same = sum((Counter(p) & Counter(r)).values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(r)
    return 2 * prec * rec / (prec + rec)


def squad_em(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


# --- lemmatisation --------------------------------------------------------------------------------------------

_IRREGULAR = {
    "is": "be", "are": "be", "was": "be", "were": "be", "am": "be", "been": "be", "being": "be",
    "has": "have", "had": "have", "having": "have", "does": "do", "did": "do", "done": "do",
    "men": "man", "women": "woman", "children": "child", "feet": "foot", "teeth": "tooth", "mice": "mouse",
    "geese": "goose", "leaves": "leaf", "wolves": "wolf", "knives": "knife", "lives": "life", "wives": "wife",
    "halves": "half", "shelves": "shelf", "oxen": "ox", "dice": "die",
}
_KEEP = {"yes", "this", "his", "its", "has", "was", "us", "as", "is", "gas", "bus", "plus", "thus", "series",
         "species", "news", "always", "perhaps", "whereas", "towards", "lens", "chaos", "canvas", "atlas",
         "analysis", "basis", "christmas", "texas", "paris", "famous", "various", "previous", "glass", "grass"}


def builtin_lemma(word: str) -> str:
    """Plural nouns and be/have/do forms only: enough to make "circles" match "circle" on both sides."""
    w = word
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if w in _KEEP or len(w) <= 3 or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "shes", "ches", "xes", "zes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is", "ous")):
        return w[:-1]
    return w


def _builtin(text: str) -> str:
    return " ".join(builtin_lemma(w) for w in text.split())


def _load(name: str) -> tuple[str, Callable[[str], str]] | None:
    if name == "spacy":  # the official scripts' lemmatiser, when its model is installed
        try:
            import spacy

            nlp = spacy.load("en_core_web_sm", disable=["ner", "textcat", "parser"])
        except Exception:
            return None
        return "spacy:en_core_web_sm", lambda text: " ".join(t.lemma_ for t in nlp(text))
    if name == "simplemma":
        try:
            import simplemma
        except Exception:
            return None
        return "simplemma", lambda text: " ".join(simplemma.lemmatize(w, lang="en") for w in text.split())
    if name == "builtin":
        return "builtin", _builtin
    raise ValueError(f"unknown lemmatizer {name!r}; known: spacy, simplemma, builtin, auto")


_BACKEND: tuple[str, Callable[[str], str]] | None = None


def _backend() -> tuple[str, Callable[[str], str]]:
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = _load("spacy") or _load("simplemma") or ("builtin", _builtin)
    return _BACKEND


def set_lemmatizer(name: str) -> str:
    """Choose the backend: spacy, simplemma, builtin, or auto (best available). Returns the one in use."""
    global _BACKEND
    if name == "auto":
        _BACKEND = None
        return _backend()[0]
    got = _load(name)
    if got is None:
        raise ValueError(f"lemmatizer {name!r} is not installed (spacy also needs en_core_web_sm)")
    _BACKEND = got
    return got[0]


def lemmatizer_name() -> str:
    return _backend()[0]


def lemmatize(text: str) -> str:
    return _backend()[1](text)
