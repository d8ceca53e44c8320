from __future__ import annotations

import string
from pathlib import Path

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from mmrag_rft.data.schema import Candidate
from mmrag_rft.parsing import parse_rank_ids, parse_stage1, parse_stage2, with_prefill
from mmrag_rft.prompts import (
    STAGE1_PREFILL_REASON,
    STAGE1_LAYOUTS,
    STAGE1_PREFILL_SCORE,
    STAGE1_SYSTEM,
    STAGE1_SYSTEM_PLAIN,
    STAGE2_PREFILL,
    stage1_prompt,
    stage2_prompt,
    to_real_ids,
    to_short_ids,
)

ROOT = Path(__file__).resolve().parents[1]

CANDS = [
    Candidate(id="img-7", modality="image", title="Tower", text="A red tower at dusk."),
    Candidate(id="txt-2", modality="text", title="History", text="The tower was built in 1889."),
    Candidate(id="tab-1", modality="table", text="height | 330 m"),
]


# --- prompts ----------------------------------------------------------------------------------------------------

def test_stage1_prompts_share_prefix_and_put_candidate_last():
    ps = [stage1_prompt("How tall is the tower?", c, style="reason") for c in CANDS]
    texts = [p.messages[1]["content"] for p in ps]
    assert all(p.messages[0] == {"role": "system", "content": STAGE1_SYSTEM} for p in ps)
    prefix = "Question: How tall is the tower?\nEvidence ("
    assert all(t.startswith(prefix) for t in texts)
    assert texts[0].endswith("Tower. A red tower at dusk.") and "(image caption)" in texts[0]
    assert texts[2].endswith("height | 330 m")
    assert ps[0].prefill == STAGE1_PREFILL_REASON == "<think>"
    assert ps[0].meta == {"stage": 1, "style": "reason", "candidate_id": "img-7", "layout": "default"}
    assert "<answer>yes</answer>" in STAGE1_SYSTEM  # the one-shot example shows the format


def test_stage1_layouts():
    q = "How tall is the tower?"
    restate = [stage1_prompt(q, c, layout="restate").messages[1]["content"] for c in CANDS]
    # the question is asked again last, and the candidates still share the question prefix
    assert all(t.startswith(f"Question: {q}\nEvidence (") for t in restate)
    assert all(t.endswith(f'help to answer the question "{q}"? Answer yes or no.') for t in restate)
    assert "height | 330 m\nDoes" in restate[2]
    ev = stage1_prompt(q, CANDS[1], layout="evidence_first").messages[1]["content"]
    assert ev.startswith("Evidence (text): History. The tower was built in 1889.\nQuestion: " + q)
    plain = stage1_prompt(q, CANDS[1], layout="plain", style="score")
    assert plain.messages[0]["content"] == STAGE1_SYSTEM_PLAIN and "<answer>" in STAGE1_SYSTEM_PLAIN
    assert plain.messages[1]["content"] == restate[1] and plain.prefill == STAGE1_PREFILL_SCORE
    # pixels go before the caption in every layout, the restated question after it
    parts = stage1_prompt(q, CANDS[0], with_pixels=True, image=object(), layout="restate").messages[1]["content"]
    assert [x["type"] for x in parts] == ["text", "image", "text"] and parts[2]["text"].endswith("yes or no.")
    # unlabelled: the same turn with no modality, in the user turn and in the system turn's worked example
    bare = [stage1_prompt(q, c, layout="unlabelled") for c in CANDS]
    assert [p.messages[1]["content"] for p in bare] == [f"Question: {q}\nEvidence: {c.display_text()}" for c in CANDS]
    assert not any(w in bare[0].messages[0]["content"] for w in ("Evidence (", "caption describes"))
    assert set(STAGE1_LAYOUTS) == {"default", "restate", "evidence_first", "plain", "unlabelled"}
    with pytest.raises(ValueError, match="layout must be one of"):
        stage1_prompt(q, CANDS[0], layout="sideways")


def test_stage1_layout_is_checked_in_configs():
    from mmrag_rft.config import ConfigError, build
    from mmrag_rft.pipeline import PipelineConfig
    from mmrag_rft.training.config import load_train_config

    assert load_train_config(ROOT / "configs/stage1_tiny.yaml", ["data.layout=restate"]).data.layout == "restate"
    with pytest.raises(ConfigError, match="override data.layout=sideways: must be one of"):
        load_train_config(ROOT / "configs/stage1_tiny.yaml", ["data.layout=sideways"])
    with pytest.raises(ConfigError, match="stage1_layout: must be one of"):
        build(PipelineConfig, {"stage1_layout": "sideways"})


def test_stage1_score_style_prefill_ends_at_the_verdict():
    p = stage1_prompt("q?", CANDS[1], style="score")
    assert p.prefill == STAGE1_PREFILL_SCORE and p.prefill.endswith("<answer>")
    assert p.to_conversation()[-1] == {"role": "assistant", "content": STAGE1_PREFILL_SCORE}


def test_stage1_pixels_only_for_images_and_caption_kept():
    img = object()
    p = stage1_prompt("q?", CANDS[0], with_pixels=True, image=img, style="reason")
    parts = p.messages[1]["content"]
    assert [x["type"] for x in parts] == ["text", "image", "text"]
    assert parts[1]["image"] is img and parts[2]["text"] == "Tower. A red tower at dusk."
    assert p.images() == [img]
    assert isinstance(stage1_prompt("q?", CANDS[0], with_pixels=False, image=img).messages[1]["content"], str)
    assert isinstance(stage1_prompt("q?", CANDS[1], with_pixels=True, image=img).messages[1]["content"], str)


def test_stage2_prompt_ids_and_mapping():
    p = stage2_prompt("How tall?", CANDS)
    text = p.messages[1]["content"]
    assert text.startswith("Question: How tall?\nEvidence:\n[1] (image caption) Tower. A red tower at dusk.")
    assert "\n[2] (text) History. The tower was built in 1889." in text and "\n[3] (table) height | 330 m" in text
    assert p.prefill == STAGE2_PREFILL and p.meta["num_candidates"] == 3
    assert p.meta["id_map"] == {"1": "img-7", "2": "txt-2", "3": "tab-1"}
    assert to_real_ids(["3", "1", "9"], p.meta["id_map"]) == (["tab-1", "img-7"], ["9"])
    assert to_short_ids(["txt-2", "nope", "img-7"], p.meta["id_map"]) == ["2", "1"]
    img = object()
    pp = stage2_prompt("How tall?", CANDS, with_pixels=True, images=[img, None, None])
    assert [x["type"] for x in pp.messages[1]["content"]][:4] == ["text", "text", "image", "text"]


# --- stage-1 parsing ---------------------------------------------------------------------------------------------

def test_stage1_strict_and_tolerant():
    ok = parse_stage1("<think>caption matches</think><answer>yes</answer>")
    assert ok.ok and ok.error is None and ok.decision == "yes" and ok.think == "caption matches"
    loose = parse_stage1("  <THINK> a </Think>\n\n<Answer> NO </ANSWER>\n")
    assert loose.ok and loose.decision == "no"
    no_think = parse_stage1("<answer>yes</answer>")
    assert not no_think.ok and no_think.decision == "yes" and no_think.error == "missing <think>…</think> block"
    assert no_think.checks == {"think": False, "answer": True, "value": True, "clean": False}
    bare = parse_stage1("<think>x</think> Yes.")
    assert not bare.ok and bare.decision == "yes" and bare.checks["answer"] is False
    maybe = parse_stage1("<think>x</think><answer>maybe</answer>")
    assert not maybe.ok and maybe.decision is None and maybe.error.startswith("answer is not yes/no")
    trailing = parse_stage1("<think>x</think><answer>no</answer> because")
    assert not trailing.ok and trailing.decision == "no" and trailing.checks["clean"] is False


def test_stage1_prefill_is_added_once():
    assert parse_stage1("yes</answer>", prefill=STAGE1_PREFILL_SCORE).ok
    assert parse_stage1("<think>\n</think>\n<answer>no</answer>", prefill=STAGE1_PREFILL_SCORE).decision == "no"
    assert parse_stage1("<think>r</think><answer>no</answer>", prefill=STAGE1_PREFILL_SCORE).ok
    assert parse_stage1(" it fits</think><answer>yes</answer>", prefill="<think>").think == "it fits"
    assert with_prefill("<think>a", "<think>") == "<think>a"
    assert with_prefill("a", "<think>") == "<think>a"


# --- stage-2 parsing ---------------------------------------------------------------------------------------------

def test_stage2_rank_syntaxes():
    for s in ("[3] > [1]", "3 > 1", "[3], [1]", "[3] [1]", " 3;1 "):
        out = parse_stage2(f"<think>r</think><rank>{s}</rank><answer>A.</answer>", num_candidates=3)
        assert out.ok, (s, out.error)
        assert out.rank == ["3", "1"]
    assert parse_rank_ids("[03] > [1]") == ["3", "1"]


def test_stage2_invalid_duplicate_and_missing():
    out = parse_stage2("r</think><rank>[3] > [9] > [3]</rank><answer>Blue</answer>", prefill="<think>",
                       num_candidates=5)
    assert not out.ok and out.rank == ["3", "9"] and out.invalid_ids == ["9"] and out.duplicate_ids == ["3"]
    assert out.raw_ids == ["3", "9", "3"] and out.answer == "Blue" and out.error == "rank names unknown ids [9]"
    words = parse_stage2("<think>r</think><rank>the best is 2</rank><answer>x</answer>", num_candidates=3)
    assert not words.ok and words.rank == ["2"] and words.checks["rank"] is False
    no_answer_tag = parse_stage2("<think>r</think><rank>[1]</rank> The answer is red.")
    assert not no_answer_tag.ok and no_answer_tag.answer == "The answer is red."
    unclosed = parse_stage2("<think>r</think><rank>[2]</rank><answer>Red roof", num_candidates=2)
    assert unclosed.answer == "Red roof" and unclosed.checks["answer"] is False
    empty = parse_stage2("", prefill="<think>")
    assert not empty.ok and empty.rank == [] and empty.answer == ""


# --- property-based ----------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["", "<think>", STAGE1_PREFILL_SCORE]))
def test_stage1_never_raises(text, prefill):
    out = parse_stage1(text, prefill=prefill)
    assert out.decision in (None, "yes", "no")
    assert isinstance(out.ok, bool) and (out.ok == (out.error is None))


_tagsoup = st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "<rank>", "</rank>", "[",
                                     "]", ">", "3", "yes", "no", " ", "\n", "x", "-1", "99999999999999999999"]),
                    max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), _tagsoup), st.one_of(st.none(), st.integers(min_value=0, max_value=20)))
def test_stage2_never_raises(text, k):
    out = parse_stage2(text, prefill="<think>", num_candidates=k)
    assert isinstance(out.rank, list) and all(isinstance(i, str) for i in out.rank)
    assert out.ok == (out.error is None)
    assert len(set(out.rank)) == len(out.rank)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + " .,'\n", max_size=80),
       st.sampled_from(["yes", "no", "Yes", "NO"]), st.sampled_from(["", " ", "\n"]), st.booleans())
def test_stage1_round_trip(think, decision, ws, use_prefill):
    full = f"<think>{think}</think>{ws}<answer>{ws}{decision}{ws}</answer>"
    text, prefill = (full[len("<think>"):], "<think>") if use_prefill else (full, "")
    out = parse_stage1(text, prefill=prefill)
    assert out.ok and out.decision == decision.lower() and out.think == think.strip()


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=12).flatmap(
    lambda k: st.tuples(st.just(k), st.permutations(list(range(1, k + 1))), st.integers(min_value=1, max_value=k))),
    st.text(alphabet=string.ascii_letters + " .,", min_size=1, max_size=60).filter(lambda s: s.strip()),
    st.sampled_from([" > ", ">", ", ", " "]), st.booleans())
def test_stage2_round_trip(kperm, answer, sep, brackets):
    k, perm, n = kperm
    ids = [str(i) for i in perm[:n]]
    rank = sep.join(f"[{i}]" if brackets else i for i in ids)
    out = parse_stage2(f"<think>why</think>\n<rank>{rank}</rank>\n<answer>{answer}</answer>", num_candidates=k)
    assert out.ok, out.error
    assert out.rank == ids and out.answer == answer.strip() and out.think == "why"
