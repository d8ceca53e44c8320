"""Stage 2's likelihood ranking: P(id ranked first), averaged over every rotation of the survivors' order."""

from __future__ import annotations

import math
import re

import pytest

from mmrag_rft.data.schema import Candidate
from mmrag_rft.listwise import consistent_ranking, likelihood_ranking, rotations
from mmrag_rft.pipeline import FilterConfig, Pipeline, PipelineConfig
from mmrag_rft.prompts import STAGE2_RANK_PREFILL

CANDS = [Candidate(id="a", modality="text", text="Stocks fell sharply."),
         Candidate(id="b", modality="text", text="Paris is the capital of France."),
         Candidate(id="c", modality="image", text="A cat on a sofa.")]


class Biased:
    """Strongly prefers whatever is shown first; `likes` adds a smaller bonus for content."""

    model_id, supports_images = "biased", False

    def __init__(self, likes: str = "", bonus: float = 1.0):
        self.likes, self.bonus, self.prompts = likes, bonus, []

    def score_yes_no(self, prompts, reuse_prefix=True):
        return [0.9 - 0.1 * i for i in range(len(prompts))]

    def score_choices(self, prompts, choices, reuse_prefix=True):
        out = []
        for p in prompts:
            self.prompts.append(p)
            bodies = re.findall(r"\n\[(\d)\] \([^)]*\) ([^\n]*)", p.messages[-1]["content"])
            assert len(bodies) == len(choices)
            logit = [(3.0 if sid == "1" else 0.0) + (self.bonus if self.likes and self.likes in body else 0.0)
                     for sid, body in bodies]
            z = [math.exp(x) for x in logit]
            out.append([x / sum(z) for x in z])
        return out

    def generate(self, prompts, **kw):
        return [["no template at all"] for _ in prompts]


def test_rotations_put_every_index_in_every_position():
    r = rotations(3)
    assert sorted(map(tuple, r)) == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    assert all(sorted(o[pos] for o in r) == [0, 1, 2] for pos in range(3))


def test_position_bias_cancels_and_content_decides():
    be = Biased(likes="Paris")
    ranked = likelihood_ranking(be, "Capital of France?", CANDS)
    assert [i for i, _ in ranked][0] == "b"
    assert sum(s for _, s in ranked) == pytest.approx(1.0)
    assert len(be.prompts) == 3 and all(p.prefill == STAGE2_RANK_PREFILL for p in be.prompts)
    # pure position bias gives every candidate the same score: ties keep the order given
    flat = likelihood_ranking(Biased(), "Capital of France?", CANDS)
    assert [i for i, _ in flat] == ["a", "b", "c"]
    assert all(s == pytest.approx(1 / 3) for _, s in flat)


def test_one_candidate_needs_no_forward_pass():
    be = Biased()
    assert likelihood_ranking(be, "q?", CANDS[:1]) == [("a", 1.0)] and not be.prompts


def test_a_real_model_scores_the_same_whatever_the_rotation_it_is_given():
    from mmrag_rft.models.loading import load_backend

    lm = load_backend("tiny-lm")
    one = dict(likelihood_ranking(lm, "Capital of France?", CANDS))
    shifted = dict(likelihood_ranking(lm, "Capital of France?", CANDS[1:] + CANDS[:1]))
    assert sum(one.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(one[k] == pytest.approx(shifted[k], abs=1e-4) for k in one)


def test_pipeline_cites_the_likelihood_ranking_even_when_the_written_one_is_unusable():
    cfg = PipelineConfig(top_n=3, filter=FilterConfig(0.0, 3), stage2_ranking="likelihood")
    r = Pipeline(Biased(likes="Paris"), config=cfg).ask("Capital of France?", candidates=CANDS)
    assert r.rank[0] == "b" and r.stage2_rank == r.rank and r.fallback is None
    assert set(r.stage2_scores) == set(r.kept_ids) and max(r.stage2_scores, key=r.stage2_scores.get) == "b"
    filt = Pipeline(Biased(likes="Paris"), config=PipelineConfig(
        top_n=3, filter=FilterConfig(0.0, 3), stage2_ranking="likelihood", sources="filter")).ask(
        "Capital of France?", candidates=CANDS)
    assert filt.rank == filt.kept_ids and filt.stage2_rank[0] == "b" and "stage2_ranking" in filt.bypassed


def test_a_first_pick_moves_first_only_where_it_holds_in_every_rotation():
    # content outweighs position: "b" is the first pick in all three rotations, the rest keep the given order
    ranked, first = consistent_ranking(Biased(likes="Paris", bonus=5.0), "Capital of France?", CANDS)
    assert first == "b" and [i for i, _ in ranked] == ["b", "a", "c"]
    # position outweighs content: the pick follows the first slot, so the given order is kept, though the
    # rotation-averaged likelihood still prefers "b"
    ranked, first = consistent_ranking(Biased(likes="Paris"), "Capital of France?", CANDS)
    assert first is None and [i for i, _ in ranked] == ["a", "b", "c"]
    assert max(dict(ranked), key=dict(ranked).get) == "b"


def test_pipeline_keeps_the_order_it_received_where_stage_2_is_not_consistent():
    def ask(bonus):
        cfg = PipelineConfig(top_n=3, filter=FilterConfig(0.0, 3), stage2_ranking="consistent")
        return Pipeline(Biased(likes="Paris", bonus=bonus), config=cfg).ask("Capital of France?", candidates=CANDS)

    sure, unsure = ask(5.0), ask(1.0)
    assert sure.rank[0] == "b" and sure.stage2_rank == sure.rank and "stage2_first_pick" not in sure.bypassed
    assert unsure.rank == unsure.kept_ids and "changed with the survivors' order" in unsure.bypassed["stage2_first_pick"]
    assert sure.stage2_written == [] and sure.fallback is None  # "no template at all": nothing usable was written
