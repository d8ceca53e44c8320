"""RL example builders, question-level split, config loading and the prefill-continuation fix (no training)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mmrag_rft.config import ConfigError
from mmrag_rft.data.schema import Candidate, Sample
from mmrag_rft.training.config import TrainConfig, load_train_config
from mmrag_rft.training.examples import (group_by_question, interleave_by_label, split_by_question, stage1_pairs,
                                         stage1_rows, stage2_candidates, stage2_rows)
from mmrag_rft.training.warmup import stage1_target, stage2_target, warmup_examples

ROOT = Path(__file__).resolve().parents[1]


def _sample(q: int, n: int = 6, gold: tuple[int, ...] = (0,)) -> Sample:
    cands = [Candidate(id=f"q{q}-c{i}", modality="text", title=f"T{i}", text=f"text {i} of {q}") for i in range(n)]
    return Sample(qid=f"q{q}", question=f"question {q}?", answers=[f"ans {q}"], candidates=cands,
                  gold_ids=[f"q{q}-c{g}" for g in gold], category="Others", dataset="webqa",
                  meta={"keywords": f"kw{q}"})


def test_split_is_by_question_and_stable():
    samples = [_sample(i) for i in range(50)]
    train, val = split_by_question(samples, 0.2, seed=3)
    assert {s.qid for s in train}.isdisjoint({s.qid for s in val})
    assert len(train) + len(val) == 50 and 3 <= len(val) <= 20
    # a question keeps its side when the set is truncated
    train2, val2 = split_by_question(samples[:25], 0.2, seed=3)
    assert {s.qid for s in val2} == {s.qid for s in val if int(s.qid[1:]) < 25}
    # candidates never cross the split
    rows = stage1_rows(train, balance=None)
    assert {r["qid"] for r in rows} <= {s.qid for s in train}


def test_split_holds_out_one_question_on_tiny_sets():
    train, val = split_by_question([_sample(0), _sample(1)], 0.01, seed=0)
    assert len(val) == 1 and len(train) == 1


def test_stage1_balance_and_labels():
    s = _sample(0, n=10, gold=(2, 5))
    pairs = stage1_pairs(s, balance=1.0, rng=random.Random(0))
    labels = [lab for _, lab in pairs]
    assert labels.count("yes") == 2 and labels.count("no") == 2
    assert {c.id for c, lab in pairs if lab == "yes"} == {"q0-c2", "q0-c5"}
    assert len(stage1_pairs(s, balance=3.0, rng=random.Random(0))) == 2 + 6
    assert len(stage1_pairs(s, balance=None)) == 10
    # no gold evidence: still some "no" examples
    assert [lab for _, lab in stage1_pairs(_sample(1, gold=()), balance=1.0)] == ["no"]


def test_stage1_other_negatives_come_from_other_questions_only():
    samples = [_sample(i, n=6, gold=(0, 1)) for i in range(8)]
    pool = [c for s in samples for c in s.candidates]
    pairs = stage1_pairs(samples[0], balance=2.0, rng=random.Random(0), other_negatives=0.5, other_pool=pool)
    neg = [c.id for c, lab in pairs if lab == "no"]
    assert len(neg) == 4 and len(set(neg)) == 4
    assert sum(cid.startswith("q0-") for cid in neg) == 2  # half own distractors, half from other questions
    assert all(cid not in ("q0-c0", "q0-c1") for cid in neg)
    # 0 keeps the old behaviour; every row built from a split stays within that split's questions
    assert all(c.id.startswith("q0-") for c, _ in stage1_pairs(samples[0], balance=2.0, other_pool=pool))
    rows = stage1_rows(samples[:4], balance=1.0, other_negatives=1.0)
    assert {r["candidate_id"].split("-")[0] for r in rows} <= {"q0", "q1", "q2", "q3"}
    assert any(r["label"] == "no" and not r["candidate_id"].startswith(r["qid"] + "-") for r in rows)
    with pytest.raises(ValueError, match="other_negatives"):
        load_train_config(None, ["data.other_negatives=1.5"])


def test_stage1_modalities_keep_only_those_candidates():
    s = _sample(0, n=8, gold=(0,))
    for c in s.candidates[4:]:
        c.modality = "image"
    s.candidates[1].modality = "image"  # one image negative among the text ones
    pairs = stage1_pairs(s, balance=3.0, rng=random.Random(0), modalities=["image"])
    assert {c.id for c, _ in pairs} <= {"q0-c1", "q0-c4", "q0-c5", "q0-c6", "q0-c7"}
    assert all(lab == "no" for _, lab in pairs)  # the text gold is not an image: no positive is left
    img_gold = _sample(1, n=8, gold=(6,))
    for c in img_gold.candidates[4:]:
        c.modality = "image"
    rows = stage1_rows([s, img_gold], balance=1.0, modalities=["image"], other_negatives=1.0)
    assert {r["modality"] for r in rows} == {"image"}
    assert [r["label"] for r in rows if r["qid"] == "q1"].count("yes") == 1
    with pytest.raises(ValueError, match="data.modalities"):
        load_train_config(None, ["data.modalities=[picture]"])


def test_stage1_label_swap_and_clip_change_how_candidates_are_shown_not_their_labels():
    samples = [_sample(i, n=6, gold=(0,)) for i in range(40)]
    for s in samples:
        s.candidates[0].modality = "image"  # every gold piece an image, as in WebQA
        s.candidates[1].text = " ".join(f"w{j}" for j in range(50))
    plain = stage1_rows(samples, balance=2.0, seed=0)
    shown = stage1_rows(samples, balance=2.0, seed=0, label_swap=0.5, clip_words=5)
    assert [(r["candidate_id"], r["label"], r["modality"]) for r in plain] == \
        [(r["candidate_id"], r["label"], r["modality"]) for r in shown]  # same pairs, labels, own modality

    def user(r):
        return r["prompt"][1]["content"]

    def label_shown(r):
        return "image caption" if "Evidence (image caption)" in user(r) else "text"

    gold_labels = [label_shown(r) for r in shown if r["label"] == "yes"]
    assert 0.25 < gold_labels.count("text") / len(gold_labels) < 0.75  # the label no longer gives the gold away
    assert all(label_shown(r) == "image caption" for r in plain if r["label"] == "yes")
    long = [r for r in shown if r["candidate_id"].endswith("-c1")]
    assert long and all("w4" in user(r) and "w5" not in user(r) for r in long)
    assert all("w49" in user(r) for r in plain if r["candidate_id"].endswith("-c1"))
    with pytest.raises(ValueError, match="data.label_swap"):
        load_train_config(None, ["data.label_swap=2"])


def test_stage1_rows_are_conversational_with_prefill_and_reward_columns():
    rows = stage1_rows([_sample(0, gold=(1,))], balance=1.0, seed=0)
    assert len(rows) == 2
    r = rows[0]
    assert [m["role"] for m in r["prompt"]] == ["system", "user", "assistant"]
    assert r["prompt"][-1]["content"] == "<think>" == r["prefill"]
    assert r["label"] in ("yes", "no") and r["qid"] == "q0"
    assert "images" not in r  # a text model sees captions only


def test_stage1_rows_without_think_prefill_the_score_prompt_and_reward_the_verdict_alone():
    from mmrag_rft.prompts import STAGE1_PREFILL_SCORE
    from mmrag_rft.rewards import stage1_accuracy_reward, stage1_format_reward

    rows = stage1_rows([_sample(0, gold=(1,))], balance=1.0, seed=0, think=False)
    assert all(r["prefill"] == STAGE1_PREFILL_SCORE == r["prompt"][-1]["content"] for r in rows)
    pf = [rows[0]["prefill"]] * 3
    assert stage1_format_reward(["yes</answer>", "no</answer>", "maybe"], prefill=pf) == [1.0, 1.0, 0.25]
    lab = rows[0]["label"]
    other = "no" if lab == "yes" else "yes"
    assert stage1_accuracy_reward([f"{lab}</answer>", f"{other}</answer>"], prefill=pf[:2], label=[lab] * 2) == [1.0, 0.0]
    # the format warm-up continues such a prefill with the verdict alone
    ex = warmup_examples(rows, stage=1, n=10, seed=0)
    assert {t for _, t in ex} <= {"yes</answer>", "no</answer>"}


def test_stage1_rows_use_the_configured_layout():
    rows = stage1_rows([_sample(0, gold=(1,))], balance=1.0, seed=0, think=False, layout="restate")
    users = [next(m for m in r["prompt"] if m["role"] == "user")["content"] for r in rows]
    assert users and all(u.endswith("Answer yes or no.") for u in users)
    plain = stage1_rows([_sample(0, gold=(1,))], balance=1.0, seed=0, layout="default")
    assert not any(next(m for m in r["prompt"] if m["role"] == "user")["content"].endswith("yes or no.")
                   for r in plain)


def test_stage1_rows_with_pixels_use_placeholders_and_images_column():
    from PIL import Image

    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="PNG")
    cands = [Candidate(id="img", modality="image", title="a red square", image_bytes=buf.getvalue()),
             Candidate(id="txt", modality="text", text="unrelated")]
    s = Sample(qid="q", question="what colour?", candidates=cands, gold_ids=["img"])
    rows = {r["candidate_id"]: r for r in stage1_rows([s], balance=1.0, with_pixels=True)}
    img_parts = [p for m in rows["img"]["prompt"] for p in m["content"] if p["type"] == "image"]
    assert len(img_parts) == 1 and "image" not in img_parts[0]
    assert len(rows["img"]["images"]) == 1 and rows["img"]["images"][0].size == (8, 8)
    assert rows["txt"]["images"] == []
    from mmrag_rft.training.examples import to_dataset

    ds = to_dataset(list(rows.values()))
    assert ds[0]["images"] is not None


def test_stage2_candidates_hardest_first_and_gold_short_ids():
    s = _sample(0, n=8, gold=(3,))
    scores = {f"q0-c{i}": i / 10 for i in range(8)}  # c7 looks most relevant to stage 1
    chosen = stage2_candidates(s, 4, stage1_scores=scores)
    assert [c.id for c in chosen] == ["q0-c3", "q0-c7", "q0-c6", "q0-c5"]
    chosen = stage2_candidates(s, 3, order=["q0-c1", "q0-c3", "q0-c0"])
    assert [c.id for c in chosen] == ["q0-c3", "q0-c1", "q0-c0"]
    assert [c.id for c in stage2_candidates(s, 3)] == ["q0-c3", "q0-c0", "q0-c1"]

    rows = stage2_rows([s], num_candidates=4, permutations=3, seed=1, stage1_scores={"q0": scores})
    assert len(rows) == 3
    for r in rows:
        id_map = json.loads(r["id_map"])
        assert [id_map[g] for g in r["gold_ids"]] == ["q0-c3"]
        assert sorted(id_map.values()) == sorted(["q0-c3", "q0-c7", "q0-c6", "q0-c5"])
        assert r["num_candidates"] == 4 and r["answers"] == ["ans 0"] and r["keywords"] == "kw0"
        assert r["prompt"][-1] == {"role": "assistant", "content": "<think>"}
    assert len({r["id_map"] for r in rows}) == 3  # distinct permutations
    two = _sample(1, n=8, gold=(2, 5))
    assert [c.id for c in stage2_candidates(two, 2)] == ["q1-c2", "q1-c5"]  # all gold: no ranking to learn
    assert [c.id for c in stage2_candidates(two, 2, max_gold=1)] == ["q1-c2", "q1-c0"]
    assert all(len(r["gold_ids"]) == 1 for r in stage2_rows([two], num_candidates=2, permutations=2, max_gold=1))


def test_warmup_targets_carry_no_gold_information():
    rng = random.Random(0)
    verdicts = {stage1_target(rng).rsplit("<answer>", 1)[1] for _ in range(200)}
    assert verdicts == {"yes</answer>", "no</answer>"}
    # flipping every label (stage 1) or moving the gold and changing the answers (stage 2) changes no target
    rows = stage1_rows([_sample(i, gold=(0,)) for i in range(10)], balance=1.0)
    flipped = [{**r, "label": "no" if r["label"] == "yes" else "yes"} for r in rows]
    assert warmup_examples(rows, stage=1, n=50, seed=0) == warmup_examples(flipped, stage=1, n=50, seed=0)
    a = stage2_rows([_sample(0, gold=(2,))], num_candidates=4)
    b = [{**r, "gold_ids": ["1", "4"], "answers": ["something else"]} for r in a]
    assert warmup_examples(a, stage=2, n=20, seed=0) == warmup_examples(b, stage=2, n=20, seed=0)
    tgt = stage2_target(a[0]["evidence"], random.Random(1))
    assert tgt.count("<rank>") == 1 and "ans 0" not in tgt
    from mmrag_rft.parsing import parse_stage2

    p = parse_stage2("<think>" + tgt, num_candidates=4)
    assert p.ok, p.checks
    # without <think> (`data.think: false`) the prompt prefills up to `<rank>[`, and so does the target's parse
    nothink = stage2_rows([_sample(0, gold=(2,))], num_candidates=4, permutations=2, think=False)
    assert all(r["prefill"].endswith("<rank>[") and r["prompt"][-1]["content"] == r["prefill"] for r in nothink)
    assert [r["gold_ids"] for r in nothink] == [r["gold_ids"] for r in stage2_rows([_sample(0, gold=(2,))],
                                                                                   num_candidates=4, permutations=2)]
    for conv, t in warmup_examples(nothink, stage=2, n=10, seed=0):
        p = parse_stage2(t, prefill=conv[-1]["content"], num_candidates=4)
        assert p.ok and not t.startswith("[") and p.think == "", (t, p.checks)


def test_config_loads_every_shipped_yaml_and_rejects_typos():
    for f in sorted((ROOT / "configs").glob("stage*.yaml")):
        cfg = load_train_config(f)
        assert isinstance(cfg, TrainConfig)
    with pytest.raises(ConfigError, match="num_generatoins"):
        load_train_config(None, ["grpo.num_generatoins=4"])
    from mmrag_rft.training.grpo import check_group_batch

    cfg = load_train_config(None, ["grpo.num_generations=4", "grpo.per_device_train_batch_size=6"])
    with pytest.raises(ValueError, match=r"x processes \(1\) = 6 is not a multiple of grpo.num_generations \(4\)"):
        check_group_batch(cfg, 1)
    check_group_batch(cfg, 2)  # 12 completions over two processes hold three whole groups


def test_grpo_section_names_exist_in_trl_grpoconfig():
    import dataclasses

    from trl import GRPOConfig

    from mmrag_rft.training.config import GRPOSection

    trl_fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    from mmrag_rft.training.grpo import OUR_GRPO_FIELDS

    ours = set(OUR_GRPO_FIELDS)  # read by our trainer subclass (training/shared_prompt.py), not passed to GRPOConfig
    assert ours.isdisjoint(trl_fields)
    assert {f.name for f in dataclasses.fields(GRPOSection)} - ours <= trl_fields


def test_prefill_is_continued_not_closed():
    from transformers import AutoTokenizer

    from mmrag_rft.models.loading import resolve_model_path
    from mmrag_rft.training.policy import continue_final_assistant

    tok = continue_final_assistant(AutoTokenizer.from_pretrained(resolve_model_path("base")))
    conv = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>"}]
    # exactly the call TRL 1.16 makes in GRPOTrainer._tokenize_prompts
    text = tok.apply_chat_template([conv], add_generation_prompt=True, tokenize=False)[0]
    assert text.endswith("<|im_start|>assistant\n<think>"), text
    ids = tok.apply_chat_template([conv], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"][0]
    assert tok.decode(ids).endswith("assistant\n<think>")
    # a conversation without a prefill still gets the generation prompt
    plain = tok.apply_chat_template([[{"role": "user", "content": "Q"}]], add_generation_prompt=True, tokenize=False)[0]
    assert plain.endswith("<|im_start|>assistant\n")


def test_warmup_key_names_a_non_default_layout_only():
    from mmrag_rft.training.config import load_train_config
    from mmrag_rft.training.grpo import warmup_key

    cfg = load_train_config(ROOT / "configs/stage1_tiny.yaml")
    assert "layout" not in warmup_key(cfg, 1, "m")  # keys saved before layouts existed still match
    other = load_train_config(ROOT / "configs/stage1_tiny.yaml", ["data.layout=plain"])
    assert warmup_key(other, 1, "m")["layout"] == "plain" and warmup_key(other, 1, "m") != warmup_key(cfg, 1, "m")


def test_completion_batch_masks_the_prompt_and_pads_right():
    from transformers import AutoTokenizer

    from mmrag_rft.models.tiny import build_tiny_lm
    from mmrag_rft.training.warmup import completion_batch

    tok = AutoTokenizer.from_pretrained(str(build_tiny_lm()))
    short = [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "<answer>"}]
    long = [{"role": "user", "content": "a much longer question with many words?"},
            {"role": "assistant", "content": "<answer>"}]
    ids, attn, lab = completion_batch(tok, [(short, "yes</answer>"), (long, "no</answer>")])
    assert ids.shape == attn.shape == lab.shape and ids.shape[0] == 2
    for row in range(2):
        target = tok.decode([t for t in lab[row].tolist() if t != -100])
        assert target.startswith(("yes</answer>", "no</answer>")[row])  # only the target (+ end of turn) is learned
        n = int(attn[row].sum())
        assert attn[row, :n].all() and not attn[row, n:].any()  # right padding
        assert (lab[row, n:] == -100).all()


def test_balanced_steps_give_every_grpo_step_as_many_relevant_as_irrelevant_prompts(tmp_path):
    from trl.trainer.grpo_trainer import RepeatSampler

    from mmrag_rft.training.grpo import grpo_args

    rows = stage1_rows([_sample(i, gold=(0, 1) if i % 3 else (0,)) for i in range(30)], balance=1.0, seed=0)
    n_yes = sum(r["label"] == "yes" for r in rows)
    assert n_yes == len(rows) - n_yes  # balance 1.0
    order = interleave_by_label(rows, seed=0)
    assert sorted(map(id, order)) == sorted(map(id, rows))  # a reordering: nothing dropped or repeated
    assert interleave_by_label(rows, seed=0) == order and interleave_by_label(rows, seed=1) != order
    # exactly the sampler TRL reads the dataset with when its shuffle is off: 4 prompts x 4 completions per step
    sampler = RepeatSampler(data_source=order, mini_repeat_count=4, batch_size=4, repeat_count=1, shuffle=False)
    idx = list(sampler)
    steps = [idx[i:i + 16] for i in range(0, len(idx) - 15, 16)]
    assert steps and all(sum(order[j]["label"] == "yes" for j in st) == 8 for st in steps)
    # the random order this replaces has unbalanced steps
    rnd = random.Random(0).sample(rows, len(rows))
    assert any(sum(r["label"] == "yes" for r in rnd[i:i + 4]) != 2 for i in range(0, len(rnd) - 3, 4))
    # an uneven ratio is spread over the whole order, not left as a tail of one label
    skew = interleave_by_label(rows + [{**r, "label": "no"} for r in rows[:10]], seed=0)
    assert sum(r["label"] == "yes" for r in skew[-len(skew) // 3:]) >= 0.25 * len(skew) // 3
    cfg = load_train_config(ROOT / "configs/stage1_tiny.yaml", ["data.balanced_steps=true"])
    assert cfg.data.balanced_steps
    assert grpo_args(cfg, tmp_path, [1.0, 1.0], shuffle=False).shuffle_dataset is False
    assert grpo_args(cfg, tmp_path, [1.0, 1.0]).shuffle_dataset is True


def test_balanced_stage2_steps_show_one_question_in_both_orders(tmp_path):
    from trl.trainer.grpo_trainer import RepeatSampler

    from mmrag_rft.training.grpo import check_group_batch

    rows = stage2_rows([_sample(i, gold=(1,)) for i in range(12)], num_candidates=2, permutations=2, seed=0)
    order = group_by_question(rows, seed=0)
    assert sorted(map(id, order)) == sorted(map(id, rows)) and group_by_question(rows, seed=1) != order
    # TRL's sampler with its shuffle off, 2 prompts x 4 completions per step
    idx = list(RepeatSampler(data_source=order, mini_repeat_count=4, batch_size=2, repeat_count=1, shuffle=False))
    steps = [[order[j] for j in idx[i:i + 8]] for i in range(0, len(idx), 8)]
    assert len(steps) == 12
    for st in steps:
        assert len({r["qid"] for r in st}) == 1  # one question per step ...
        first_gold = {r["gold_ids"][0] for r in st}
        assert first_gold == {"1", "2"}  # ... its gold shown first in one prompt and second in the other
    cfg = load_train_config(ROOT / "configs/stage2_tiny.yaml", ["data.balanced_steps=true", "data.permutations=2",
                                                               "grpo.num_generations=4",
                                                               "grpo.per_device_train_batch_size=8"])
    check_group_batch(cfg, 1, stage=2)
    cfg.grpo.per_device_train_batch_size = 12  # 3 prompts: a question's two orders would straddle two steps
    with pytest.raises(ValueError, match="balanced_steps"):
        check_group_batch(cfg, 1, stage=2)
    check_group_batch(cfg, 1, stage=1)  # stage 1 has no orders to keep together (`permutations` is stage 2's)


def test_selection_in_every_order_tells_reading_from_position():
    from mmrag_rft.training.heldout import selection_vs_chance

    rows = stage2_rows([_sample(i, gold=(1,)) for i in range(10)], num_candidates=2, permutations=2, seed=0)
    out = lambda i: f"</think><rank>[{i}]</rank><answer>x</answer>"  # noqa: E731
    position = selection_vs_chance([out(1) for _ in rows], rows)
    reading = selection_vs_chance([out(r["gold_ids"][0]) for r in rows], rows)
    assert position["first_is_gold"] == reading["first_is_gold"] / 2 == 0.5  # one order in two is right by position
    assert position["questions_in_every_order"] == reading["questions_in_every_order"] == 10
    assert position["same_first_pick_every_order"] == position["gold_first_every_order"] == 0.0
    assert reading["same_first_pick_every_order"] == reading["gold_first_every_order"] == 1.0
    assert "gold_first_every_order" not in selection_vs_chance([out(1)] * 10, rows[::2])  # one order per question
    both = stage2_rows([_sample(i, gold=(0, 1)) for i in range(20, 24)], num_candidates=2, permutations=2, seed=0)
    mixed = selection_vs_chance([out(1) for _ in rows + both], rows + both)
    assert mixed["questions_in_every_order"] == 10 and mixed["gold_first_every_order"] == 0.0  # all-gold ones left out


def test_every_grpo_section_field_reaches_grpoconfig(tmp_path):
    import dataclasses

    from mmrag_rft.training.grpo import OUR_GRPO_FIELDS, grpo_args

    cfg = load_train_config(ROOT / "configs/stage1_tiny.yaml", ["grpo.top_k=7", "grpo.epsilon_high=0.3",
                                                                 "grpo.repetition_penalty=1.1"])
    args = grpo_args(cfg, tmp_path, [1.0, 1.0])
    for f in dataclasses.fields(cfg.grpo):
        ours = getattr(cfg.grpo, f.name)
        if f.name not in OUR_GRPO_FIELDS and ours is not None and f.name != "report_to":  # TRL derives/normalises
            assert getattr(args, f.name) == ours, f.name
    assert (args.top_k, args.epsilon_high, args.repetition_penalty) == (7, 0.3, 1.1)


def test_question_wide_advantage_opposes_a_list_that_names_a_position():
    """One question in two orders; every completion writes `[1] > [2]`: right in the first order, wrong in the other.
    Per prompt (TRL) nothing is learned; over the question the same list is pushed up in one order, down in the other."""
    import torch

    from mmrag_rft.training.advantages import grouped_advantages

    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.4, 0.4, 0.4, 0.4])
    per_prompt, zero_p = grouped_advantages(rewards, ["A"] * 4 + ["B"] * 4, "group")
    assert torch.allclose(per_prompt, torch.zeros(8)) and zero_p.all()
    adv, zero = grouped_advantages(rewards, ["q"] * 8, "group")
    assert (adv[:4] > 0.9).all() and (adv[4:] < -0.9).all() and not zero.any()
    assert torch.allclose(grouped_advantages(rewards, ["q"] * 8, "none")[0], rewards - 0.7)
    # two questions: each is its own baseline; an unscorable row (NaN) leaves the mean alone and gets 0
    two = torch.tensor([1.0, 0.0, float("nan"), 0.5, 0.5, 0.5])
    adv2, zero2 = grouped_advantages(two, ["a", "a", "a", "b", "b", "b"], "group")
    assert adv2[0] > 0 > adv2[1] and adv2[2] == 0 and torch.allclose(adv2[3:], torch.zeros(3))
    assert zero2.tolist() == [False] * 3 + [True] * 3
    batch, _ = grouped_advantages(two, ["a", "a", "a", "b", "b", "b"], "batch")
    assert torch.allclose(batch[3:], torch.zeros(3)) and batch[0] > 0
    with pytest.raises(ValueError, match="group names"):
        grouped_advantages(two, ["a"], "group")


def test_question_wide_advantage_needs_both_orders_in_one_step():
    from mmrag_rft.training.grpo import check_group_batch

    sets = ["data.balanced_steps=true", "data.permutations=2", "grpo.num_generations=4",
            "grpo.per_device_train_batch_size=8", "grpo.advantage_group=question"]
    cfg = load_train_config(ROOT / "configs/stage2_tiny.yaml", sets)
    check_group_batch(cfg, 1, stage=2)
    with pytest.raises(ValueError, match="advantage_group 'question'.*stage 1"):
        check_group_batch(cfg, 1, stage=1)
    for off in ("data.balanced_steps=false", "data.permutations=1"):
        with pytest.raises(ValueError, match="advantage_group 'question'.*balanced_steps"):
            check_group_batch(load_train_config(ROOT / "configs/stage2_tiny.yaml", [*sets, off]), 1, stage=2)
    with pytest.raises(ValueError, match="advantage_group"):
        load_train_config(ROOT / "configs/stage2_tiny.yaml", ["grpo.advantage_group=per-question"])
