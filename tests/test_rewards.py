from __future__ import annotations

import math

import pytest

from mmrag_rft.config import build
from mmrag_rft.metrics.text import set_lemmatizer
from mmrag_rft.rewards import (
    RewardConfig,
    answer_reward,
    combined_reward,
    make_answer_reward,
    make_ranking_reward,
    make_reward_funcs,
    make_stage1_format_reward,
    make_stage2_format_reward,
    ranking_reward,
    stage1_accuracy_reward,
    stage1_format_reward,
    stage2_format_reward,
)

L3 = 1 / math.log2(3)


@pytest.fixture(autouse=True)
def _builtin_lemmas():
    set_lemmatizer("builtin")
    yield
    set_lemmatizer("auto")


def test_stage1_format_shaped_partial_credit():
    outs = [
        "<think>caption matches</think><answer>yes</answer>",  # all four pieces
        "<think>a</think><answer>maybe</answer>",  # think, answer, clean
        "<answer>yes</answer>",  # answer, value
        "<think>ok</think> yes",  # think
        "yes",  # nothing
        "",
        "<think>a</think><answer>no</answer> trailing",  # think, answer, value
    ]
    assert stage1_format_reward(outs) == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.75]
    assert make_stage1_format_reward("strict")(outs) == [1.0, 0, 0, 0, 0, 0, 0]


def test_stage1_format_uses_prefill_and_conversational_completions():
    comps = [[{"role": "assistant", "content": "yes</answer>"}], "no"]
    pf = ["<think>\n</think>\n<answer>"] * 2
    # "no" alone after the prefill: think closed, value yes/no, but the answer tag is never closed
    assert stage1_format_reward(comps, prefill=pf) == [1.0, 0.5]
    assert stage1_format_reward.__name__ == "stage1_format_reward"


def test_stage1_accuracy():
    comps = ["<think>a</think><answer>yes</answer>", "<think>a</think><answer>No</answer>",
             "<think>a</think><answer>maybe</answer>", "garbage", "<think>a</think><answer>yes</answer>"]
    labels = ["yes", "yes", "no", "no", True]
    assert stage1_accuracy_reward(comps, label=labels) == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert stage1_accuracy_reward(["yes</answer>"], label=[1], prefill=["<think></think><answer>"]) == [1.0]


def test_stage2_format_shaped_partial_credit():
    pf = ["<think>"]
    k = [5]
    assert stage2_format_reward(["r</think><rank>[3] > [1]</rank><answer>Red.</answer>"], prefill=pf,
                                num_candidates=k) == [1.0]
    # think + rank syntax; ids invalid (9 out of range, 3 repeated); no answer; not clean
    assert stage2_format_reward(["r</think><rank>3, 9, 3</rank>"], prefill=pf, num_candidates=k) == [0.4]
    # think, ids, answer, clean ok but the rank holds words
    assert stage2_format_reward(["r</think><rank>best: [2]</rank><answer>x</answer>"], prefill=pf,
                                num_candidates=k) == [0.8]
    # missing think (no prefill given): rank, ids, answer; not clean
    assert stage2_format_reward(["<rank>[2]</rank><answer>x</answer>"], num_candidates=k) == [0.6]
    assert stage2_format_reward([""], num_candidates=k) == [0.0]
    assert make_stage2_format_reward("strict")(["<think>r</think><rank>[2]</rank><answer>x</answer>",
                                                "<rank>[2]</rank><answer>x</answer>"], num_candidates=[5, 5]) == [1.0, 0.0]


def test_ranking_reward_ndcg_and_penalty():
    kw = {"prefill": ["<think>"] * 5, "gold_ids": [["1", "2"]] * 4 + [["3"]], "num_candidates": [5] * 5}
    comps = [
        "r</think><rank>[1] > [2]</rank><answer>a</answer>",  # ideal
        "r</think><rank>[3] > [1]</rank><answer>a</answer>",  # one hit at rank 2
        "r</think><rank>[2] > [9]</rank><answer>a</answer>",  # hit at 1, one invalid id: x 1/2
        "r</think><answer>a</answer>",  # no rank block
        "r</think><rank>[3] > [9] > [3]</rank>",  # hit at 1; only 1 of 3 listed ids valid
    ]
    got = ranking_reward(comps, **kw)
    idcg = 1 + L3
    expected = [1.0, L3 / idcg, (1 / idcg) * 0.5, 0.0, 1 / 3]
    assert got == pytest.approx(expected, abs=1e-12)
    assert got[1] == pytest.approx(0.386852807234, abs=1e-9)
    f1 = make_ranking_reward("set_f1")
    assert f1(["<think>r</think><rank>[1] > [2] > [4]</rank>"], gold_ids=[["1", "2"]], num_candidates=[5]) == \
        pytest.approx([0.8])
    at1 = make_ranking_reward("ndcg", k=1)
    assert at1(["<think>r</think><rank>[3] > [1]</rank>"], gold_ids=[["1", "2"]], num_candidates=[5]) == [0.0]


def test_penalized_ranking_gives_each_id_its_own_credit():
    # plain NDCG pays a full list with gold first as much as the gold id alone; per-id credit does not
    full = "<think>r</think><rank>[1] > [2] > [3] > [4]</rank><answer>a</answer>"
    alone = "<think>r</think><rank>[1]</rank><answer>a</answer>"
    wrong_first = "<think>r</think><rank>[2] > [1]</rank><answer>a</answer>"
    kw = {"gold_ids": [["1"]] * 3, "num_candidates": [4] * 3}
    assert ranking_reward([full, alone, wrong_first], **kw)[:2] == [1.0, 1.0]
    pen = make_ranking_reward("ndcg_penalized", penalty=0.5)
    got = pen([full, alone, wrong_first], **kw)
    assert got[1] == 1.0
    assert got[0] == pytest.approx(1 - 0.5 * (L3 + 0.5 + 1 / math.log2(5)))
    assert got[2] == pytest.approx(L3 - 0.5)
    assert pen(["<think>r</think><rank>[2] > [3]</rank>"], gold_ids=[["1"]], num_candidates=[4]) == [0.0]  # floored
    assert pen.__name__ == "ranking_penalized_reward"
    with pytest.raises(ValueError, match="ranking_metric"):
        make_ranking_reward("ndgc")


def test_answer_reward_webqa_and_mmqa():
    comps = ["<think>r</think><rank>[1]</rank><answer>The roof is red and white.</answer>",
             "<think>r</think><rank>[1]</rank><answer>Yes, it is.</answer>",
             "<think>r</think><rank>[1]</rank>red",  # no answer tag
             "<think>r</think><rank>[1]</rank><answer>The Mask</answer>",
             "<think>r</think><rank>[1]</rank><answer>There are two.</answer>"]
    kw = {"answers": [["The roof is red."], ["Yes"], ["red"], ["Mask"], ["2"]],
          "category": ["color", "YesNo", "color", "", "number"],
          "dataset": ["webqa", "webqa", "webqa", "mmqa", ""],
          "keywords": ["red", None, None, None, None]}
    got = answer_reward(comps, **kw)
    # color: {red, white} vs {red}: P 1/2, R 1 -> 2PR/(P+R+1e-5); YesNo exact -> 2/(2+1e-5)
    assert got == pytest.approx([1 / (1.5 + 1e-5), 2 / (2 + 1e-5), 0.0, 1.0, 2 / (2 + 1e-5)], abs=1e-12)
    em = make_answer_reward("em")
    assert em(["<think>r</think><rank>[1]</rank><answer>the mask</answer>"], answers=[["Mask"]]) == [1.0]


def test_answer_reward_domain_fallback():
    comp = ["<think>r</think><rank>[1]</rank><answer>Blue footprints are painted.</answer>"]
    kw = {"answers": [["Blue footprints are painted down the center."]], "category": ["shape"],
          "dataset": ["webqa"], "keywords": ["Blue footprints."]}
    # no shape word in the keywords: the official metric gives 0; the fallback compares full bags:
    # pred [blue, footprint, be, painted] vs ref [blue, footprint]: P 1/2, R 1
    assert make_answer_reward("auto", domain_fallback=False)(comp, **kw) == [0.0]
    assert answer_reward(comp, **kw) == pytest.approx([1 / (1.5 + 1e-5)], abs=1e-12)


def test_factory_names_weights_and_combined():
    cfg = build(RewardConfig, {"format_weight": 0.5, "ranking_metric": "set_f1", "format_mode": "strict"})
    funcs, weights = make_reward_funcs(2, cfg)
    assert [f.__name__ for f in funcs] == ["stage2_format_strict_reward", "ranking_set_f1_reward", "answer_reward"]
    assert weights == [0.5, 1.0, 1.0]
    funcs1, w1 = make_reward_funcs(1)
    assert [f.__name__ for f in funcs1] == ["stage1_format_reward", "stage1_accuracy_reward"] and w1 == [1.0, 1.0]
    comp = ["<think>r</think><rank>[1]</rank><answer>Mask</answer>"]
    kw = {"gold_ids": [["1"]], "num_candidates": [3], "answers": [["Mask"]], "dataset": ["mmqa"]}
    assert combined_reward(comp, stage=2, config=cfg, **kw) == [0.5 + 1.0 + 1.0]
    assert combined_reward(["<think>a</think><answer>no</answer>"], stage=1, label=["yes"]) == [1.0]
    with pytest.raises(ValueError):
        make_reward_funcs(3)


def test_rewards_are_chosen_by_name_with_weights_and_a_users_own_by_dotted_path():
    from mmrag_rft.config import ConfigError, build
    from mmrag_rft.rewards import reward_names

    assert reward_names(1) == ["format", "accuracy"] and reward_names(2) == ["format", "ranking", "answer", "grounding"]
    cfg = build(RewardConfig, {"funcs": {"answer": 2.0, "format": 0.5}})
    funcs, weights = make_reward_funcs(2, cfg)
    assert [f.__name__ for f in funcs] == ["answer_reward", "stage2_format_reward"] and weights == [2.0, 0.5]
    own = build(RewardConfig, {"funcs": {"accuracy": 1.0, "os.path.basename": 0.1}})
    funcs, weights = make_reward_funcs(1, own)
    assert funcs[1] is __import__("os").path.basename and weights == [1.0, 0.1]
    with pytest.raises(ValueError, match="no stage-1 reward named 'ranking'.*registered: format, accuracy"):
        make_reward_funcs(1, build(RewardConfig, {"funcs": {"ranking": 1.0}}))
    with pytest.raises(ValueError, match="cannot import 'no_such_pkg.reward'"):
        make_reward_funcs(2, build(RewardConfig, {"funcs": {"no_such_pkg.reward": 1.0}}))
    del ConfigError


def test_a_misnamed_reward_fails_before_any_model_loads(tmp_path):
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import train

    cfg = load_train_config(None, ["model.path=/not/loaded", "rewards.funcs={formatt: 1.0}",
                                   f"output_dir={tmp_path / 'r'}"])
    with pytest.raises(ValueError, match="formatt"):
        train(cfg, stage=1)


def test_grounding_rewards_reasoning_about_the_candidates_not_the_question_or_the_example():
    from mmrag_rft.prompts import STAGE2_EXAMPLE_THINK
    from mmrag_rft.rewards import grounding_score, make_grounding_reward

    q = "What colour is the saucer under the cup of espresso?"
    ev = ["Espresso cup. A white porcelain cup of espresso on a purple saucer.", "A red triangle above a blue square."]
    assert grounding_score(q, q, ev) == 0.0  # the question restated
    assert grounding_score(STAGE2_EXAMPLE_THINK, q, ev) == 0.0  # the worked example copied
    assert grounding_score("[1] shows a purple saucer under the white porcelain cup.", q, ev) == 1.0
    assert grounding_score("[3] shows a purple saucer, a white porcelain cup.", q, ev) == 0.5  # no [3] of two
    assert grounding_score("[2] is about something else.", q, ev) == 0.5  # names one, takes nothing from it
    # a number or name the candidates do not hold costs credit; one they hold does not
    assert grounding_score("[1] shows a purple saucer from Milan under the white porcelain cup.", q, ev) == 0.0
    assert grounding_score("[1] shows a purple saucer, 12 cm wide, under the white porcelain cup.", q, ev) == 0.0
    assert grounding_score("[1] shows a purple saucer under the white porcelain Espresso cup.", q, ev) == 1.0
    comp = ["<think>[1] shows a purple saucer under the white porcelain cup.</think>"
            "<rank>[1]</rank><answer>Purple.</answer>",
            "<think>What colour is the saucer?</think><rank>[1]</rank><answer>Purple.</answer>"]
    kw = {"question": [q, q], "evidence": [ev, ev], "prefill": ["", ""]}
    assert make_grounding_reward()(comp, **kw) == [1.0, 0.0]
    # opt-in: a stage's default rewards stay format + ranking + answer
    assert [f.__name__ for f in make_reward_funcs(2)[0]] == ["stage2_format_reward", "ranking_reward",
                                                            "answer_reward"]
