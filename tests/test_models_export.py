"""A trained folder -> a small LoRA adapter on its base (`models.export`), loaded back through the one loader."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _fine_tune(tmp_path, seed: int = 0):
    """tiny-lm with two random LoRAs merged in (as the warm-up and GRPO leave it): a folder that differs from its base
    only in linear weights, at rank <= 2 x 4."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmrag_rft.models.loading import resolve_model_path

    base = resolve_model_path("tiny-lm")
    model = AutoModelForCausalLM.from_pretrained(str(base))
    torch.manual_seed(seed)
    for targets in (["q_proj", "v_proj", "down_proj"], ["q_proj", "o_proj"]):
        peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
        model = peft.merge_and_unload()
    out = tmp_path / "run" / "merged"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(out)
    return out


def test_export_round_trips_through_the_loader(tmp_path):
    import torch

    from mmrag_rft.models.export import MANIFEST, export_adapter
    from mmrag_rft.models.loading import load_backend, model_settings, resolve_model_path
    from mmrag_rft.prompts import stage1_prompt
    from mmrag_rft.data.schema import Candidate

    trained = _fine_tune(tmp_path)
    manifest = {"name": "tiny-stage1", "stage": 1, "pipeline": {"filter": {"threshold": 0.0, "top_k": 7}}}
    split = {"train": ["q1", "q2"], "val": ["q3"]}
    info = export_adapter(trained, tmp_path / "adapter", base_spec="tiny-lm", manifest=manifest, card="# card\n",
                          split=split)
    assert info["probe_max_logit_diff"] < 1e-3
    from mmrag_rft.evaluation.evaluate import heldout_qids

    assert heldout_qids(tmp_path / "adapter") == {"q3"}  # --heldout works on the exported model as on its run
    assert max(info["ranks"]) <= 8  # q_proj got two rank-4 deltas, the rest one
    assert info["size_bytes"] < (trained / "model.safetensors").stat().st_size / 4
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "tiny-lm"
    assert json.loads((tmp_path / "adapter" / MANIFEST).read_text())["export"]["modules"] == info["modules"]

    # the adapter folder is a model spec: merged once into the cache, settings read from its manifest
    assert model_settings(str(tmp_path / "adapter"))["pipeline"]["filter"]["top_k"] == 7
    merged = resolve_model_path(str(tmp_path / "adapter"))
    assert (merged / "config.json").is_file() and merged != trained
    # a run folder resolves to its merged/ model
    assert resolve_model_path(str(tmp_path / "run")) == trained

    cand = Candidate(id="c1", modality="text", text="The Eiffel Tower is in Paris.")
    prompts = [stage1_prompt("Where is the Eiffel Tower?", cand, style="score")]
    want = load_backend(str(tmp_path / "run")).score_yes_no(prompts)
    got = load_backend(str(tmp_path / "adapter"))
    assert got.model_id == "tiny-stage1"
    assert got.score_yes_no(prompts) == pytest.approx(want, abs=1e-4)
    base = load_backend("tiny-lm").score_yes_no(prompts)
    assert abs(base[0] - want[0]) > 1e-4  # the fine-tune did change the verdict: the comparison above could fail
    del torch


def test_a_half_precision_export_is_half_the_size_and_scores_the_same(tmp_path):
    from safetensors.torch import load_file

    from mmrag_rft.models.export import export_adapter
    from mmrag_rft.models.loading import load_backend
    from mmrag_rft.prompts import stage1_prompt
    from mmrag_rft.data.schema import Candidate

    trained = _fine_tune(tmp_path, seed=1)
    full = export_adapter(trained, tmp_path / "fp32", base_spec="tiny-lm")
    half = export_adapter(trained, tmp_path / "fp16", base_spec="tiny-lm", dtype="float16")
    assert half["dtype"] == "float16" and half["size_bytes"] < 0.6 * full["size_bytes"]
    assert {str(v.dtype) for v in load_file(str(tmp_path / "fp16" / "adapter_model.safetensors")).values()} == \
        {"torch.float16"}
    prompts = [stage1_prompt("Where is it?", Candidate(id="c", modality="text", text="In Paris."), style="score")]
    want = load_backend(str(tmp_path / "run")).score_yes_no(prompts)
    assert load_backend(str(tmp_path / "fp16")).score_yes_no(prompts) == pytest.approx(want, abs=1e-3)
    with pytest.raises(ValueError, match="dtype must be"):
        export_adapter(trained, tmp_path / "x", base_spec="tiny-lm", dtype="int8")


def test_the_stage2_card_names_its_base_and_how_it_is_loaded():
    from mmrag_rft.models.export import model_card

    manifest = {"name": "reader-stage2", "stage": 2, "base": "qwen2.5-coder-0.5b", "prompt": {"layout": "default",
                "think": True}, "pipeline": {}, "heldout": {"qa_acc": 0.3},
                "training": {"command": "mmrag train stage2 ...", "commit": "abc", "config_sha256": "0" * 64,
                             "steps": 60, "data": "val_records.json.gz",
                             "split": {"val_fraction": 0.2, "split_seed": 0, "train_questions": 242,
                                       "heldout_questions": 51}}}
    card = model_card(manifest)
    assert "base_model: Qwen/Qwen2.5-Coder-0.5B-Instruct" in card and "stage-2" in card
    assert "stage2_model: reader" in card and "--model default" not in card


def test_the_stage1_card_states_a_modality_prior_only_where_the_training_gold_has_one_modality(tmp_path):
    from mmrag_rft.data.jsonl import write_samples_jsonl
    from mmrag_rft.data.schema import Candidate, Sample
    from mmrag_rft.models.export import gold_modalities, model_card, read_manifest
    from mmrag_rft.models.loading import shipped_model

    def sample(q, gold_modality):
        cands = [Candidate(id=f"{q}g", modality=gold_modality, text="gold", title="g"),
                 Candidate(id=f"{q}n", modality="text", text="other")]
        return Sample(qid=q, question="?", answers=["a"], candidates=cands, gold_ids=[f"{q}g"])

    path = tmp_path / "data.jsonl"
    write_samples_jsonl([sample("q1", "image"), sample("q2", "image"), sample("q3", "text")], path)
    data = {"path": str(path)}
    assert gold_modalities(data, ["q1", "q2"]) == {"image": 2}
    assert gold_modalities(data, ["q1", "q3"]) == {"image": 1, "text": 1}
    assert gold_modalities({"path": str(tmp_path / "gone.jsonl")}, ["q1"]) is None

    def card(gold, layout="default", swap=0.0):
        split = {"val_fraction": 0.2, "split_seed": 0, "train_questions": 2, "heldout_questions": 1}
        return model_card({"name": "s1", "stage": 1, "base": "base", "prompt": {"layout": layout, "think": False},
                           "pipeline": {}, "training": {"command": "c", "commit": "x", "config_sha256": "0" * 64,
                                                         "steps": 1, "data": "d", "split": split,
                                                         "gold_modalities": gold,
                                                         "config": {"data": {"label_swap": swap}}}})

    assert "Every gold piece of its training data is an image" in card({"image": 2})
    assert "`--set filter.retrieval_weight=100`" in card({"image": 2})  # what a user with text evidence can do
    assert "Every gold piece" not in card({"image": 1, "text": 1})  # both modalities: no prior to warn of
    assert "Every gold piece" not in card(None)  # data not readable at export: no claim
    assert "Every gold piece" not in card({"image": 2}, layout="unlabelled")
    assert "50% of the candidates under the other modality's label" in card({"image": 2}, swap=0.5)
    for stage in (1, 2):  # each shipped card is what its manifest writes
        folder = shipped_model(stage)
        assert model_card(read_manifest(folder)) == (folder / "README.md").read_text(encoding="utf-8")


def test_pipeline_config_takes_the_models_settings_under_yaml_and_overrides(tmp_path):
    from mmrag_rft.models.export import MANIFEST
    from mmrag_rft.pipeline import pipeline_config

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / MANIFEST).write_text(json.dumps({"pipeline": {"filter": {"threshold": 0.0, "top_k": 9}}}))
    cfg = pipeline_config(str(folder))
    assert (cfg.filter.threshold, cfg.filter.top_k, cfg.filter.order) == (0.0, 9, "fused")
    cfg = pipeline_config(str(folder), overrides=["filter.top_k=3"])
    assert (cfg.filter.threshold, cfg.filter.top_k) == (0.0, 3)
    plain = pipeline_config("tiny-lm")
    assert (plain.filter.threshold, plain.filter.top_k) == (0.5, 5)


def test_export_refuses_a_model_that_is_not_a_fine_tune(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from mmrag_rft.models.export import export_adapter
    from mmrag_rft.models.loading import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(str(resolve_model_path("tiny-lm")))
    with torch.no_grad():
        model.model.norm.weight.add_(0.5)  # a norm weight: no LoRA can carry it
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="not a linear weight"):
        export_adapter(tmp_path / "m", tmp_path / "out", base_spec="tiny-lm")
    assert not (tmp_path / "out").exists()


def test_an_ablation_is_recorded_in_the_manifest_and_the_card(tmp_path):
    import shutil

    from mmrag_rft.models.export import MANIFEST, read_manifest, record_ablation
    from mmrag_rft.models.loading import shipped_model

    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(shipped_model(1) / MANIFEST, folder / MANIFEST)
    row = {"description": "what it is", "n": 3, "qa_acc": 0.5, "retrieval_f1": 0.25, "sources_ndcg@5": 0.125}
    record_ablation(folder, {"note": "3 questions; captions stand in for pixels", "questions": 3,
                             "systems": {"shipped": row}}, command="mmrag ablate X")
    m = read_manifest(folder)
    assert m["ablation"]["systems"]["shipped"]["qa_acc"] == 0.5 and m["ablation"]["command"] == "mmrag ablate X"
    card = (folder / "README.md").read_text()
    assert "## What each stage adds" in card and "| shipped | 0.500 | 0.250 | 0.125 | what it is |" in card
    assert "Qwen2.5-Coder-0.5B-Instruct" in card  # the reader it ships with is named among the limits
    with pytest.raises(ValueError, match="no mmrag_model.json"):
        record_ablation(tmp_path, {"systems": {}})


def test_the_reader_spec_names_the_shipped_stage2_model_or_the_reader_as_released(monkeypatch, tmp_path):
    from mmrag_rft.models import loading

    monkeypatch.setattr(loading, "SHIPPED_DIR", tmp_path)  # a package that ships no stage-2 adapter
    assert loading.shipped_model(2) is None
    assert loading.model_name("reader") == "Qwen2.5-Coder-0.5B-Instruct"  # named without converting anything
    (tmp_path / "stage2").mkdir()
    (tmp_path / "stage2" / "adapter_config.json").write_text('{"base_model_name_or_path": "qwen2.5-coder-0.5b"}')
    (tmp_path / "stage2" / "mmrag_model.json").write_text('{"name": "reader-stage2", "stage": 2}')
    assert loading.source_path("reader") == tmp_path / "stage2"
    assert loading.model_name("reader") == "reader-stage2"


def test_a_run_that_started_from_a_trained_model_is_exported_against_the_untrained_base(tmp_path):
    from mmrag_rft.models.export import manifest_from_run
    from mmrag_rft.models.loading import READER_SPEC, untrained_base

    assert untrained_base("reader") == READER_SPEC and untrained_base("default") == "base"
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "mmrag_model.json").write_text('{"name": "tiny-stage2", "stage": 2, "base": "tiny-lm"}')
    for run, start in (("run", tmp_path / "adapter"), ("run2", tmp_path / "run")):  # a run from a run from an adapter
        (tmp_path / run).mkdir()
        (tmp_path / run / "config.yaml").write_text(f"model: {{path: {start}}}\ndata: {{}}\n")
        (tmp_path / run / "result.json").write_text('{"stage": 2}')
        assert manifest_from_run(tmp_path / run, name="x")["base"] == "tiny-lm"
