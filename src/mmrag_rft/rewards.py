"""Rule-based rewards for the two stages, with TRL's reward-function signature.

`f(completions, **kwargs) -> list[float]`: `completions` are strings or conversational lists
([{"role": "assistant", "content": ...}]); dataset columns arrive as per-completion lists in kwargs:
  stage 1: `label` ("yes"/"no", or a bool / 1 / 0), optional `prefill`;
  stage 2: `gold_ids` (short ids, e.g. ["2", "4"]), `num_candidates`, `answers` (list of str per row),
           optional `category` (WebQA Qcate), `dataset` ("webqa" / "mmqa"), `keywords` (WebQA Keywords_A),
           `prefill`, `question`, `evidence` (the candidates' texts as shown, in prompt order).
Pure functions: no model is imported.

Values (see docs/method.md):
- stage-1 format, shaped: think 0.25 + answer block 0.25 + yes/no value 0.25 + clean 0.25; strict: 1 if all.
- stage-2 format, shaped: think 0.2 + rank block 0.2 + ids valid (in 1..K, no repeats) 0.2 + answer 0.2 +
  clean 0.2; strict: 1 if all.
- stage-1 accuracy: 1 if the parsed yes/no equals the label, else 0 (0 when no verdict can be read).
- ranking: NDCG@k (binary relevance) of the ranked short ids against the gold ids, or set F1, or penalized NDCG
  (DCG of the gold ids minus penalty x DCG of the non-gold ids, over the ideal DCG, floored at 0), multiplied
  by the share of listed ids that are valid (in range and not repeats); 0 without a <rank> block. A row
  without gold ids scores 1 for an empty ranking and 0 otherwise.
- answer: WebQA QA-Acc for WebQA rows (category-aware F1 / keyword recall), MMQA list F1 (or EM) otherwise;
  0 without an <answer> block.
- grounding (stage 2, opt-in by `rewards.funcs`): 0.5 if <think> names a candidate by a valid [id] + 0.5 x the
  share of 3 content words it takes from the candidates and not from the question; 0 for a copy of the system
  prompt's worked example. Needs the `question` and `evidence` columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mmrag_rft.metrics.mmqa import list_em, list_f1
from mmrag_rft.metrics.ranking import ndcg_at_k, set_prf
from mmrag_rft.metrics.webqa import CATEGORIES as WEBQA_CATEGORIES
from mmrag_rft.metrics.webqa import qa_acc, references_for
from mmrag_rft.parsing import parse_stage1, parse_stage2

STAGE1_FORMAT_SHARES = {"think": 0.25, "answer": 0.25, "value": 0.25, "clean": 0.25}
STAGE2_FORMAT_SHARES = {"think": 0.2, "rank": 0.2, "ids": 0.2, "answer": 0.2, "clean": 0.2}

RewardFunc = Callable[..., list[float]]


@dataclass
class RewardConfig:
    format_mode: Literal["shaped", "strict"] = "shaped"
    format_weight: float = 1.0
    accuracy_weight: float = 1.0  # stage 1
    ranking_weight: float = 1.0  # stage 2
    answer_weight: float = 1.0  # stage 2
    # ndcg_penalized: per-id credit, each listed non-gold id subtracts `ranking_penalty` x its rank discount, so a
    # list earns only what its gold ids earn and every wrong id costs (no safe harbour in a long or a one-id list)
    ranking_metric: Literal["ndcg", "set_f1", "ndcg_penalized"] = "ndcg"
    ranking_penalty: float = 0.5  # ndcg_penalized only
    ranking_k: int | None = None  # NDCG cut-off; None = the whole ranking
    answer_metric: Literal["auto", "webqa", "f1", "em"] = "auto"  # auto: the row's dataset's (data/datasets.py)
    webqa_domain_fallback: bool = True  # score full bags when a reference has no colour/shape/... word
    # the stage's rewards by name with their weights, e.g. {format: 0.5, ranking: 1.0, answer: 1.0,
    # my_pkg.rewards.brevity: 0.2}: a registered name (`reward_names(stage)`) or a dotted path to a function with
    # TRL's reward signature. null: the stage's registered rewards at the *_weight values above.
    funcs: dict[str, float] | None = None

    RANGES = {"ranking_penalty": (0.0, None), "ranking_k": (1, None)}


# --- helpers ------------------------------------------------------------------------------------------------

def completion_text(completion: Any) -> str:
    """The assistant text of a completion, whether a string or a conversational message list."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return completion_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        msgs = [m for m in completion if isinstance(m, dict)]
        if msgs and all("role" in m for m in msgs):
            assistant = [m for m in msgs if m.get("role") == "assistant"] or msgs
            return completion_text(assistant[-1].get("content"))
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in completion)
    return str(completion)


def _col(kwargs: dict[str, Any], name: str, n: int, default: Any = None) -> list[Any]:
    v = kwargs.get(name)
    if v is None:
        return [default] * n
    if isinstance(v, (list, tuple)) and len(v) == n:
        return list(v)
    return [v] * n  # a scalar broadcast to every row


def _label(v: Any) -> str | None:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return "yes" if v > 0 else "no"
    if isinstance(v, str) and v.strip().lower() in ("yes", "no", "1", "0", "true", "false"):
        return "yes" if v.strip().lower() in ("yes", "1", "true") else "no"
    return None


def _named(fn: RewardFunc, name: str) -> RewardFunc:
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


# --- stage 1 ------------------------------------------------------------------------------------------------

def make_stage1_format_reward(mode: Literal["shaped", "strict"] = "shaped") -> RewardFunc:
    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        prefills = _col(kwargs, "prefill", len(completions), "")
        out = []
        for c, pf in zip(completions, prefills):
            p = parse_stage1(completion_text(c), prefill=pf or "")
            out.append(float(p.ok) if mode == "strict"
                       else round(sum(s for k, s in STAGE1_FORMAT_SHARES.items() if p.checks.get(k)), 6))
        return out

    return _named(reward, "stage1_format_reward" if mode == "shaped" else "stage1_format_strict_reward")


stage1_format_reward = make_stage1_format_reward("shaped")


def stage1_accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    n = len(completions)
    prefills, labels = _col(kwargs, "prefill", n, ""), _col(kwargs, "label", n)
    out = []
    for c, pf, lab in zip(completions, prefills, labels):
        d = parse_stage1(completion_text(c), prefill=pf or "").decision
        gold = _label(lab)
        out.append(float(d is not None and gold is not None and d == gold))
    return out


# --- stage 2 ------------------------------------------------------------------------------------------------

def make_stage2_format_reward(mode: Literal["shaped", "strict"] = "shaped") -> RewardFunc:
    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        prefills, ks = _col(kwargs, "prefill", n, ""), _col(kwargs, "num_candidates", n)
        out = []
        for c, pf, k in zip(completions, prefills, ks):
            p = parse_stage2(completion_text(c), prefill=pf or "", num_candidates=None if k is None else int(k))
            out.append(float(p.ok) if mode == "strict"
                       else round(sum(s for key, s in STAGE2_FORMAT_SHARES.items() if p.checks.get(key)), 6))
        return out

    return _named(reward, "stage2_format_reward" if mode == "shaped" else "stage2_format_strict_reward")


stage2_format_reward = make_stage2_format_reward("shaped")


def penalized_ndcg(ranked: Sequence[str], gold: set[str], k: int | None = None, penalty: float = 0.5) -> float:
    """(DCG of gold ids - penalty x DCG of non-gold ids) / ideal DCG, floored at 0: per-id credit for a ranking."""
    import math

    top = list(ranked)[:k] if k else list(ranked)
    gain = sum((1.0 if i in gold else -penalty) / math.log2(r + 2) for r, i in enumerate(top))
    ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(gold), k or len(gold))))
    return max(0.0, gain / ideal) if ideal else 0.0


def rank_score(raw_ids: Sequence[str], gold: Sequence[str], *, num_candidates: int | None = None,
               metric: Literal["ndcg", "set_f1", "ndcg_penalized"] = "ndcg", k: int | None = None,
               penalty: float = 0.5) -> float:
    """Ranking quality of listed short ids vs gold short ids, times the share of listed ids that are valid."""
    gold_set = {str(g) for g in gold}
    if not raw_ids:
        return 1.0 if not gold_set else 0.0
    seen: list[str] = []
    valid = 0
    for i in raw_ids:
        in_range = num_candidates is None or (i.isdigit() and 1 <= int(i) <= num_candidates)
        if i not in seen:
            seen.append(i)
            valid += int(in_range)
    share = valid / len(raw_ids)
    if not gold_set:
        return 0.0
    ranked = [i for i in seen if num_candidates is None or (i.isdigit() and 1 <= int(i) <= num_candidates)]
    if metric == "ndcg_penalized":
        base = penalized_ndcg(ranked, gold_set, k, penalty)
    else:
        base = ndcg_at_k(ranked, gold_set, k) if metric == "ndcg" else set_prf(ranked, gold_set)[2]
    return base * share


_RANKING_NAMES = {"ndcg": "ranking_reward", "set_f1": "ranking_set_f1_reward", "ndcg_penalized": "ranking_penalized_reward"}


def make_ranking_reward(metric: Literal["ndcg", "set_f1", "ndcg_penalized"] = "ndcg", k: int | None = None,
                        penalty: float = 0.5) -> RewardFunc:
    if metric not in _RANKING_NAMES:
        raise ValueError(f"rewards.ranking_metric must be one of {', '.join(_RANKING_NAMES)}, got {metric!r}")

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        prefills, ks = _col(kwargs, "prefill", n, ""), _col(kwargs, "num_candidates", n)
        golds = _col(kwargs, "gold_ids", n, [])
        out = []
        for c, pf, kk, g in zip(completions, prefills, ks, golds):
            kk = None if kk is None else int(kk)
            p = parse_stage2(completion_text(c), prefill=pf or "", num_candidates=kk)
            if not p.raw_ids and "<rank" not in completion_text(c).lower() and "<rank" not in (pf or "").lower():
                out.append(0.0)  # no <rank> block at all: nothing was ranked
                continue
            out.append(rank_score(p.raw_ids, [str(x) for x in (g or [])], num_candidates=kk, metric=metric, k=k,
                                  penalty=penalty))
        return out

    return _named(reward, _RANKING_NAMES[metric])


ranking_reward = make_ranking_reward("ndcg")


def _auto_answer_metric(dataset: str, category: str) -> Literal["webqa", "f1", "em"]:
    """The registered dataset's answer metric; a row without a known dataset is WebQA when its category is one of
    WebQA's, list F1 otherwise."""
    from mmrag_rft.data.datasets import DATASETS

    if dataset.lower() in DATASETS:
        return DATASETS[dataset.lower()].answer_metric
    return "webqa" if (not dataset and category in WEBQA_CATEGORIES) else "f1"


def answer_score(answer: str, answers: Sequence[str], *, category: str = "", dataset: str = "",
                 keywords: str | None = None, metric: Literal["auto", "webqa", "f1", "em"] = "auto",
                 domain_fallback: bool = True) -> float:
    answers = [a for a in (answers or []) if isinstance(a, str)]
    if metric == "auto":
        metric = _auto_answer_metric(dataset, category)
    if metric == "webqa":
        refs = references_for(keywords, answers)
        return qa_acc(answer, refs, category or "Others", domain_fallback=domain_fallback) if refs else 0.0
    if not answers:
        return 0.0
    return list_em(answer, answers) if metric == "em" else float(list_f1(answer, answers))


def make_answer_reward(metric: Literal["auto", "webqa", "f1", "em"] = "auto",
                       domain_fallback: bool = True) -> RewardFunc:
    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        prefills, ks = _col(kwargs, "prefill", n, ""), _col(kwargs, "num_candidates", n)
        answers, cats = _col(kwargs, "answers", n, []), _col(kwargs, "category", n, "")
        datasets, kws = _col(kwargs, "dataset", n, ""), _col(kwargs, "keywords", n)
        out = []
        for c, pf, kk, ans, cat, ds, kw in zip(completions, prefills, ks, answers, cats, datasets, kws):
            text = completion_text(c)
            if "<answer" not in text.lower():
                out.append(0.0)
                continue
            p = parse_stage2(text, prefill=pf or "", num_candidates=None if kk is None else int(kk))
            if isinstance(ans, str):
                ans = [ans]
            out.append(answer_score(p.answer, list(ans or []), category=str(cat or ""), dataset=str(ds or ""),
                                    keywords=kw, metric=metric, domain_fallback=domain_fallback))
        return out

    return _named(reward, "answer_reward")


answer_reward = make_answer_reward("auto")


_STOPWORDS = frozenset(
    "the and for are was were this that with from has have had its not but which what who whom whose where when why "
    "how does did can could would should will shall may might one two all any both each more most other some such "
    "than then there these those they their them into onto over under about above below between same also only very "
    "answer evidence question image caption text table".split())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def content_words(text: str) -> set[str]:
    """Lower-cased words of three letters or more, stop words left out: what grounding counts as shared."""
    return {w for w in _words(text) if len(w) > 2 and w not in _STOPWORDS}


def _shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _specifics(text: str) -> set[str]:
    """Numbers and capitalised words not starting a sentence: the claims in a text one can check against a source."""
    text = re.sub(r"\[\d{1,3}\]", " ", text)  # candidate ids are references, not claims
    out, end, last = set(), 0, ""  # `last`: the last non-space character before the word ("" at the start)
    for m in re.finditer(r"[A-Za-z0-9]+", text):
        w, gap = m.group(), text[end:m.start()].rstrip()
        last = gap[-1] if gap else last
        if any(ch.isdigit() for ch in w) or (w[0].isupper() and last not in ("", ".", "!", "?", ":", ";")):
            out.add(w.lower())
        end, last = m.end(), w[-1]
    return out - _STOPWORDS


def grounding_score(think: str, question: str, evidence: Sequence[str], *, words_for_full: int = 3) -> float:
    """How much stage 2's reasoning is about the candidates it was given, in [0, 1]: 0.5 for naming one by a valid
    [id], plus 0.5 x the share of `words_for_full` content words that come from the candidates and not from the
    question; all of it times the share of the reasoning's numbers and names that the question or a candidate
    holds (an invented quantity costs credit). A question restated scores 0, and so does reasoning copied from the
    system prompt's worked example."""
    from mmrag_rft.prompts import STAGE2_EXAMPLE_THINK

    if not think.strip() or _shingles(think) & _shingles(STAGE2_EXAMPLE_THINK):
        return 0.0
    named = any(1 <= int(i) <= len(evidence) for i in re.findall(r"\[(\d{1,3})\]", think))
    source = " ".join([question, *evidence])
    from_evidence = (content_words(think) - content_words(question)) & content_words(" ".join(evidence))
    claims = _specifics(think)
    faithful = len(claims & set(_words(source))) / len(claims) if claims else 1.0
    return faithful * (0.5 * named + 0.5 * min(1.0, len(from_evidence) / max(1, words_for_full)))


def make_grounding_reward() -> RewardFunc:
    """Stage 2: `grounding_score` of the <think> block; needs the rows' `question` and `evidence` (the candidates'
    texts in prompt order) columns."""

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        prefills, questions = _col(kwargs, "prefill", n, ""), _col(kwargs, "question", n, "")
        evidence = _col(kwargs, "evidence", n, [])
        return [grounding_score(parse_stage2(completion_text(c), prefill=pf or "").think, str(q or ""),
                                [str(e) for e in (ev or [])]) for c, pf, q, ev in zip(completions, prefills,
                                                                                       questions, evidence)]

    return _named(reward, "grounding_reward")


# --- registry: a new reward is one function plus one line ------------------------------------------------

RewardFactory = Callable[[RewardConfig], RewardFunc]
_REGISTRY: dict[tuple[int, str], RewardFactory] = {}
_DEFAULT_WEIGHT = {"format": "format_weight", "accuracy": "accuracy_weight", "ranking": "ranking_weight",
                   "answer": "answer_weight"}


def register_reward(name: str, stage: int, factory: RewardFactory) -> None:
    """Make `name` usable in a stage's `rewards.funcs`; `factory(config)` builds the TRL reward function."""
    _REGISTRY[(stage, name)] = factory


register_reward("format", 1, lambda c: make_stage1_format_reward(c.format_mode))
register_reward("accuracy", 1, lambda c: stage1_accuracy_reward)
register_reward("format", 2, lambda c: make_stage2_format_reward(c.format_mode))
register_reward("ranking", 2, lambda c: make_ranking_reward(c.ranking_metric, c.ranking_k, c.ranking_penalty))
register_reward("answer", 2, lambda c: make_answer_reward(c.answer_metric, c.webqa_domain_fallback))
register_reward("grounding", 2, lambda c: make_grounding_reward())


def reward_names(stage: int) -> list[str]:
    """The registered rewards of a stage, in their default order."""
    return [n for s, n in _REGISTRY if s == stage]


def _import_reward(path: str) -> RewardFunc:
    import importlib

    module, _, attr = path.replace(":", ".").rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"rewards.funcs: cannot import {path!r} ({e})") from None
    if not callable(fn):
        raise ValueError(f"rewards.funcs: {path!r} is not a function")
    return fn


def make_reward_funcs(stage: int, config: RewardConfig | None = None) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions of a stage and their weights, in the form GRPOTrainer takes
    (`reward_funcs=funcs`, `GRPOConfig(reward_weights=weights)`)."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    cfg = config or RewardConfig()
    chosen = cfg.funcs if cfg.funcs else {n: getattr(cfg, _DEFAULT_WEIGHT[n]) for n in reward_names(stage)
                                        if n in _DEFAULT_WEIGHT}  # opt-in rewards need funcs
    funcs, weights = [], []
    for name, weight in chosen.items():
        if (stage, name) in _REGISTRY:
            funcs.append(_REGISTRY[(stage, name)](cfg))
        elif "." in name or ":" in name:
            funcs.append(_import_reward(name))
        else:
            raise ValueError(f"rewards.funcs: no stage-{stage} reward named {name!r} (registered: "
                             f"{', '.join(reward_names(stage))}; or a dotted path module.function)")
        try:
            weights.append(float(weight))
        except (TypeError, ValueError):
            raise ValueError(f"rewards.funcs.{name}: the weight must be a number, got {weight!r}") from None
    return funcs, weights


def make_combined_reward(stage: int, config: RewardConfig | None = None) -> RewardFunc:
    """One function returning the weighted sum of the stage's rewards (for evaluation and logging)."""
    funcs, weights = make_reward_funcs(stage, config)

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        total = [0.0] * len(completions)
        for f, w in zip(funcs, weights):
            for i, v in enumerate(f(completions, **kwargs)):
                total[i] += w * v
        return total

    return _named(reward, f"stage{stage}_combined_reward")


def combined_reward(completions: Sequence[Any], *, stage: int, config: RewardConfig | None = None,
                    **kwargs: Any) -> list[float]:
    return make_combined_reward(stage, config)(completions, **kwargs)
