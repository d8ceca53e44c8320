"""Stage 2's list-wise ranking read from the reader in one forward pass per order: P(id is ranked first).

The reader reads all survivors together, with its reasoning left empty, and the token after `<rank>[` is the id it
would rank first; its probability over the ids is a list-wise relevance score. A small reader's written `<rank>`
list follows positions more than content, and so does this distribution read once, so it is read once per cyclic
rotation of the survivors' order and each candidate's log-probability is averaged over the rotations: every
candidate is seen in every position and the position bias cancels (permutation self-consistency).
`consistent_ranking` moves a candidate first only where it is the first pick in every rotation, and otherwise keeps
the order it was given (the filter's, which already carries stage 1's judgement).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from mmrag_rft.prompts import MAX_SCORED_IDS, STAGE2_MAX_CHARS, STAGE2_RANK_PREFILL, stage2_prompt


def rotations(k: int) -> list[list[int]]:
    """The k cyclic orders of range(k): each index is in each position once."""
    return [list(range(i, k)) + list(range(i)) for i in range(k)]


def rotation_probs(backend: Any, question: str, candidates: Sequence[Any], *,
                   images: Sequence[Any] | None = None, with_pixels: bool = False,
                   max_chars: int = STAGE2_MAX_CHARS) -> list[tuple[list[int], list[float]]]:
    """For each cyclic rotation of the candidates (at most the first nine): (order, P(first id) per position)."""
    k = len(candidates)
    imgs = list(images[:k]) if images is not None else [None] * k
    orders = rotations(k)
    prompts = [dataclasses.replace(
        stage2_prompt(question, [candidates[j] for j in o], with_pixels=with_pixels, images=[imgs[j] for j in o],
                      max_chars=max_chars), prefill=STAGE2_RANK_PREFILL) for o in orders]
    return list(zip(orders, backend.score_choices(prompts, [[str(i)] for i in range(1, k + 1)])))


def likelihood_ranking(backend: Any, question: str, candidates: Sequence[Any], *,
                       images: Sequence[Any] | None = None, with_pixels: bool = False,
                       max_chars: int = STAGE2_MAX_CHARS) -> list[tuple[str, float]]:
    """(candidate id, score) best first; scores are the softmax of the rotation-averaged log P(first), summing to 1
    over the scored candidates. Ties keep the given order; candidates past the ninth follow in the given order with
    score 0 (ids from 10 on are not one token)."""
    return likelihood_and_picks(backend, question, candidates, images, with_pixels, max_chars)[0]


def consistent_ranking(backend: Any, question: str, candidates: Sequence[Any], *,
                       images: Sequence[Any] | None = None, with_pixels: bool = False,
                       max_chars: int = STAGE2_MAX_CHARS) -> tuple[list[tuple[str, float]], str | None]:
    """The order given, with the candidate the reader ranks first in *every* rotation moved to the front; where its
    first pick changes with the order, the order given is kept (pairwise ranking prompting's both-orders rule,
    Qin et al. 2024). Returns ((id, rotation-averaged score) in that order, the id moved first or None)."""
    ranked, picks = likelihood_and_picks(backend, question, candidates, images, with_pixels, max_chars)
    scores = dict(ranked)
    first = picks[0] if picks and len(set(picks)) == 1 else None
    order = [c.id for c in candidates]
    if first is not None:
        order = [first] + [i for i in order if i != first]
    return [(i, scores[i]) for i in order], first


def likelihood_and_picks(backend: Any, question: str, candidates: Sequence[Any], images: Sequence[Any] | None = None,
                         with_pixels: bool = False, max_chars: int = STAGE2_MAX_CHARS) -> tuple[list[tuple[str, float]], list[str]]:
    """(`likelihood_ranking`'s list, the id ranked first in each rotation): one set of K passes for both."""
    scored, rest = list(candidates[:MAX_SCORED_IDS]), list(candidates[MAX_SCORED_IDS:])
    k = len(scored)
    if k <= 1:
        return [(c.id, 1.0) for c in scored] + [(c.id, 0.0) for c in rest], [c.id for c in scored]
    logp, picks = [0.0] * k, []
    for order, p in rotation_probs(backend, question, scored, images=images, with_pixels=with_pixels,
                                   max_chars=max_chars):
        picks.append(scored[order[max(range(k), key=lambda pos: p[pos])]].id)
        for pos, j in enumerate(order):
            logp[j] += math.log(max(p[pos], 1e-12)) / k
    top = max(logp)
    z = [math.exp(x - top) for x in logp]
    total = sum(z)
    ranked = sorted(range(k), key=lambda j: -logp[j])  # sorted() is stable: ties keep the given order
    return [(scored[j].id, z[j] / total) for j in ranked] + [(c.id, 0.0) for c in rest], picks
