"""RL examples for both stages, as rows TRL's GRPOTrainer reads: a conversational `prompt` plus reward columns.

Stage 1: one row per (question, candidate), label "yes"/"no", negatives subsampled to a configurable ratio.
Stage 2: one row per question (times `permutations`): K candidates = gold + the hardest negatives, shuffled,
gold given as short ids ("1".."K") so the ranking reward never sees real ids.

Vision-language rows keep the prompt's images as `{"type": "image"}` placeholders and the PIL images in an
`images` column: TRL fills the placeholders in order (`prepare_multimodal_messages`) and Arrow cannot store
PIL objects inside nested message content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mmrag_rft.data.images import pixels_or_caption
from mmrag_rft.data.schema import Candidate, Sample
from mmrag_rft.models.chat import ChatPrompt
from mmrag_rft.prompts import stage1_prompt, stage2_prompt, to_short_ids


# --- splitting ------------------------------------------------------------------------------------------------

def _unit(qid: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_by_question(samples: Iterable[Sample], val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(train, val) by question id: a question and all of its candidates land on one side only.

    Hash-based rather than a shuffled cut, so a question keeps its side when the data set grows or is
    truncated with `limit` (held-out numbers stay comparable across runs).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be within [0, 1), got {val_fraction}")
    train, val = [], []
    for s in samples:
        (val if _unit(s.qid, seed) < val_fraction else train).append(s)
    if val_fraction > 0 and not val and len(train) > 1:  # tiny sets: still hold out one question
        val.append(train.pop(min(range(len(train)), key=lambda i: _unit(train[i].qid, seed))))
    return train, val


def _rows_from_prompt(prompt: ChatPrompt, with_pixels: bool) -> dict[str, Any]:
    """`prompt` (+ `images`) columns: images become placeholders, every content a list of text parts."""
    conv = prompt.to_conversation()
    if not with_pixels:
        return {"prompt": conv}
    images: list[Any] = []
    out = []
    for m in conv:
        content = m["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else []
        if not isinstance(content, str):
            for p in content:
                if p.get("type") == "image":
                    images.append(p["image"])
                    parts.append({"type": "image", "text": None})
                else:
                    parts.append({"type": "text", "text": p.get("text", "")})
        out.append({"role": m["role"], "content": parts})
    return {"prompt": out, "images": images}


# --- stage 1 --------------------------------------------------------------------------------------------------

def _of_modalities(candidates: Iterable[Candidate], modalities: Sequence[str] | None) -> list[Candidate]:
    return [c for c in candidates if modalities is None or c.modality in modalities]


def stage1_pairs(sample: Sample, *, balance: float | None = 1.0, max_pairs: int | None = None,
                 rng: random.Random | None = None, other_negatives: float = 0.0,
                 other_pool: Sequence[Candidate] = (),
                 modalities: Sequence[str] | None = None) -> list[tuple[Candidate, str]]:
    """(candidate, "yes"/"no") pairs of one question; negatives subsampled to `balance` per positive.

    A question without gold candidates keeps min(#candidates, round(balance)) negatives so that "no evidence"
    questions still teach the model to say no. `other_negatives` (0..1) is the share of the negatives drawn
    from `other_pool` (other questions' candidates) instead of this question's own distractors: a retrieval
    pool over a whole corpus is mostly such off-topic candidates, and they teach the coarse filter what
    "unrelated" looks like before the hard, same-topic distractors of WebQA/MMQA can. `modalities` keeps only
    candidates of those modalities (None: all); the caller filters `other_pool` alike.
    """
    rng = rng or random.Random(0)
    gold = sample.gold_set
    kept = _of_modalities(sample.candidates, modalities)
    pos = [c for c in kept if c.id in gold]
    neg = [c for c in kept if c.id not in gold]
    if balance is not None:
        n_neg = round(balance * len(pos)) if pos else max(1, round(balance))
        n_other = min(round(other_negatives * n_neg), len(other_pool)) if other_pool else 0
        own = {c.id for c in sample.candidates}
        others: list[Candidate] = []
        for _ in range(4 * n_other):  # rejection-sample candidates that are not this question's own
            if len(others) == n_other:
                break
            c = other_pool[rng.randrange(len(other_pool))]
            if c.id not in own and all(c.id != o.id for o in others):
                others.append(c)
        neg = rng.sample(neg, min(len(neg), n_neg - len(others))) + others
    pairs = [(c, "yes") for c in pos] + [(c, "no") for c in neg]
    rng.shuffle(pairs)
    if max_pairs is not None:
        pairs = pairs[:max_pairs]
    return pairs


_SWAPPED = {"image": "text", "text": "image"}


def _as_shown(cand: Candidate, rng: random.Random, label_swap: float, clip_words: int | None) -> Candidate:
    """The candidate as a stage-1 training prompt shows it: text clipped to `clip_words`, then with probability
    `label_swap` under the other modality's label (tables keep theirs)."""
    if clip_words is not None and cand.modality == "text":
        cand = dataclasses.replace(cand, text=" ".join(cand.text.split()[:clip_words]))
    if label_swap and cand.modality in _SWAPPED and rng.random() < label_swap:
        cand = dataclasses.replace(cand, modality=_SWAPPED[cand.modality], image_path=None, image_bytes=None)
    return cand


def stage1_rows(samples: Iterable[Sample], *, balance: float | None = 1.0, max_pairs_per_question: int | None = None,
                with_pixels: bool = False, max_chars: int = 1200, seed: int = 0,
                other_negatives: float = 0.0, think: bool = True,
                layout: str = "default", modalities: Sequence[str] | None = None, label_swap: float = 0.0,
                clip_words: int | None = None) -> list[dict[str, Any]]:
    """Stage-1 rows: `prompt` (+ `images`), `label`, `prefill`, `qid`, `candidate_id`, `modality`, `dataset`.

    `think=False` builds the score-style prompt (empty think block prefilled): the policy writes only the verdict.
    `label_swap` and `clip_words` change how a candidate is shown, never its label (`_as_shown`); `modality`
    stays the candidate's own.

    Negatives drawn from other questions (`other_negatives`) come from the same `samples`, so a train/val
    split by question stays leak-free.
    """
    rng = random.Random(seed)
    samples = list(samples)
    pool = _of_modalities((c for s in samples for c in s.candidates), modalities) if other_negatives > 0 else []
    shown_rng = random.Random(f"{seed}:shown")  # its own stream: the pairs drawn do not depend on it
    rows = []
    for s in samples:
        for cand, label in stage1_pairs(s, balance=balance, max_pairs=max_pairs_per_question, rng=rng,
                                        other_negatives=other_negatives, other_pool=pool, modalities=modalities):
            shown = _as_shown(cand, shown_rng, label_swap, clip_words)
            img = pixels_or_caption(shown) if with_pixels else None
            p = stage1_prompt(s.question, shown, with_pixels=img is not None, image=img,
                              style="reason" if think else "score", max_chars=max_chars,
                              layout=layout)
            row = _rows_from_prompt(p, with_pixels)
            row.update(label=label, prefill=p.prefill, qid=s.qid, candidate_id=cand.id, modality=cand.modality,
                       dataset=s.dataset)
            rows.append(row)
    return rows


def interleave_by_label(rows: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Stage-1 rows in a fixed order where relevant and irrelevant prompts are spread evenly (1:1 alternates).

    GRPO's advantage is relative within a prompt's group, but Adam normalises every step: a step of mostly
    "no" prompts moves the shared yes/no prior as far as a balanced step moves the discriminative direction.
    With a balanced data set and random order such steps are common at 4 prompts per step, and once the
    prior tips every group answers alike, the reward variance is zero and nothing brings it back. Read
    in this order (TRL's shuffle off), every window of consecutive prompts holds the data set's label ratio.
    """
    rng = random.Random(seed)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_label.setdefault(str(r["label"]), []).append(r)
    keyed = []
    for rank, (label, group) in enumerate(sorted(by_label.items(), key=lambda kv: kv[0] != "yes")):
        rng.shuffle(group)
        keyed += [((i + 0.5) / len(group), rank, i, r) for i, r in enumerate(group)]
    return [r for *_, r in sorted(keyed, key=lambda k: k[:3])]


# --- stage 2 --------------------------------------------------------------------------------------------------

def group_by_question(rows: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Stage-2 rows in a fixed order where each question's permutations are consecutive (questions shuffled, seeded).

    Read in this order (TRL's shuffle off) with permutations x G completions per step, a step shows one question in
    every order: a list that wins by the position it names wins in one order and loses in the other, so within a
    step only reading the candidates earns reward. In TRL's shuffled order a position that happened to be right
    for the step's only question is what the update rewards.
    """
    by_q: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_q.setdefault(str(r["qid"]), []).append(r)
    groups = list(by_q.values())
    random.Random(seed).shuffle(groups)
    return [r for g in groups for r in g]


def hardest_negatives(sample: Sample, *, stage1_scores: dict[str, float] | None = None,
                      order: Sequence[str] | None = None) -> list[Candidate]:
    """Non-gold candidates, hardest first: by the stage-1 model's P(yes) when given, else by `order`
    (retrieval rank), else the pool order."""
    gold = sample.gold_set
    neg = [c for c in sample.candidates if c.id not in gold]
    if stage1_scores is not None:
        return sorted(neg, key=lambda c: -stage1_scores.get(c.id, float("-inf")))
    if order is not None:
        rank = {cid: i for i, cid in enumerate(order)}
        return sorted(neg, key=lambda c: rank.get(c.id, len(rank)))
    return neg


def stage2_candidates(sample: Sample, k: int, *, stage1_scores: dict[str, float] | None = None,
                      order: Sequence[str] | None = None, max_gold: int | None = None) -> list[Candidate]:
    """Gold first (at most k, and at most `max_gold`), then the hardest negatives up to k (unshuffled)."""
    gold = [c for c in sample.candidates if c.id in sample.gold_set][:min(k, max_gold or k)]
    return gold + hardest_negatives(sample, stage1_scores=stage1_scores, order=order)[: k - len(gold)]


def stage2_rows(samples: Iterable[Sample], *, num_candidates: int = 5, permutations: int = 1, with_pixels: bool = False,
                max_chars: int = 600, seed: int = 0,
                stage1_scores: dict[str, dict[str, float]] | None = None,
                order_fn: Callable[[Sample], Sequence[str]] | None = None,
                max_gold: int | None = None, think: bool = True) -> list[dict[str, Any]]:
    """Stage-2 rows: `prompt` (+ `images`), `gold_ids` (short ids, best first in pool order), `num_candidates`,
    `answers`, `category`, `dataset`, `keywords`, `prefill`, `qid`, `id_map` (JSON of short -> real id), `question`,
    `evidence` (each candidate's text as the prompt shows it, in prompt order; the grounding reward reads it).
    `think=False`: the prompt prefills an empty think block and `<rank>[` (`prompts.stage2_prompt`)."""
    import json

    rng = random.Random(seed)
    rows = []
    for s in samples:
        scores = stage1_scores.get(s.qid) if stage1_scores is not None else None
        order = order_fn(s) if (order_fn is not None and scores is None) else None
        chosen = stage2_candidates(s, num_candidates, stage1_scores=scores, order=order, max_gold=max_gold)
        if not chosen:
            continue
        seen: set[tuple[str, ...]] = set()
        for _ in range(permutations):
            perm = chosen[:]
            for _try in range(8):  # distinct permutations where the pool allows it
                rng.shuffle(perm)
                if tuple(c.id for c in perm) not in seen:
                    break
            seen.add(tuple(c.id for c in perm))
            imgs = [pixels_or_caption(c) for c in perm] if with_pixels else None
            p = stage2_prompt(s.question, perm, with_pixels=with_pixels and any(i is not None for i in imgs or []),
                              images=imgs, max_chars=max_chars, think=think)
            id_map = p.meta["id_map"]
            row = _rows_from_prompt(p, with_pixels)
            row.update(gold_ids=to_short_ids([g for g in s.gold_ids if g in id_map.values()], id_map),
                       num_candidates=len(perm), answers=list(s.answers), category=s.category, dataset=s.dataset,
                       keywords=str(s.meta.get("keywords") or ""), prefill=p.prefill, qid=s.qid,
                       id_map=json.dumps(id_map), question=s.question,
                       evidence=p.meta["evidence"])
            rows.append(row)
    return rows


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A `datasets.Dataset` (PIL images in `images` become its Image feature)."""
    from datasets import Dataset

    if not rows:
        raise ValueError("no training examples were built (empty data, or no candidates)")
    return Dataset.from_list(rows)
