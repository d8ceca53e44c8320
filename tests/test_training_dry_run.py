"""`mmrag train ... --dry-run`: the paper-scale configs checked without a GPU or weights, one line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmrag_rft.cli import app

ROOT = Path(__file__).resolve().parents[1]
CPU = ["--set", "model.path=tiny-vlm25", "--set", "grpo.use_vllm=false"]


def _dry(stage: int, *extra: str):
    return CliRunner().invoke(app, ["train", f"stage{stage}", "--config",
                                    str(ROOT / f"configs/stage{stage}_qwen2.5-vl-3b.yaml"), "--dry-run", *extra])


def _errors(r) -> list[str]:
    return [line for line in r.output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("stage", [1, 2])
def test_the_paper_scale_configs_pass_and_print_the_plan(stage):
    r = _dry(stage, *CPU, "--num-processes", "8")
    assert r.exit_code == 0, r.output
    assert "Qwen2_5_VLForConditionalGeneration" in r.output and "dry run ok" in r.output
    assert "global_batch_completions" in r.output and " 128 " in r.output  # 8 per device x 2 accumulation x 8


@pytest.mark.parametrize("extra, says", [
    (["--set", "grpo.per_device_train_batch_size=6", "--num-processes", "1"],
     "x processes (1) = 12 is not a multiple of grpo.num_generations (8)"),
    (["--set", "lora.target_modules=[q_proj,qkv_proj]"], "lora.target_modules ['qkv_proj'] are not modules"),
    (["--set", "model.max_pixels=40000000"], "but the model's context is 8192"),
    (["--set", "lora.top_layers=99"], "lora.top_layers 99 > the model's 2 layers"),
    (["--set", "model.path=/no/such/model"], "model.path '/no/such/model'"),
])
def test_each_misconfiguration_is_one_clear_line(extra, says):
    r = _dry(2, *CPU, *extra)
    assert r.exit_code == 2 and "Traceback" not in r.output
    errors = _errors(r)
    assert len(errors) == 1 and says in " ".join(r.output.split()), r.output


def test_missing_gpu_software_is_named(monkeypatch):
    from mmrag_rft.training import dry_run

    real = dry_run._installed
    monkeypatch.setattr(dry_run, "_installed", lambda d: None if d in ("vllm", "deepspeed") else real(d))
    r = _dry(1, "--set", "model.path=tiny-vlm25", "--accelerate-config", str(ROOT / "configs/accelerate/zero3.yaml"))
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "vLLM is not installed" in text and "DeepSpeed ZeRO-3 but deepspeed is not installed" in text
    monkeypatch.setattr(dry_run, "_installed", lambda d: "0.1.0" if d == "vllm" else real(d))
    r = _dry(1, "--set", "model.path=tiny-vlm25")
    assert r.exit_code == 2 and "vLLM 0.1.0 is outside the range TRL" in " ".join(r.output.split())


def test_zero3_that_cannot_gather_its_weights_for_saving_is_refused(tmp_path):
    text = (ROOT / "configs/accelerate/zero3.yaml").read_text()
    assert "zero3_save_16bit_model: true" in text
    bad = tmp_path / "zero3_nosave.yaml"
    bad.write_text(text.replace("zero3_save_16bit_model: true", "zero3_save_16bit_model: false"))
    ok = _dry(1, *CPU, "--accelerate-config", str(ROOT / "configs/accelerate/zero3.yaml"))
    r = _dry(1, *CPU, "--accelerate-config", str(bad))
    assert "zero3_save_16bit_model" not in ok.output
    assert r.exit_code == 2 and "ZeRO-3 without zero3_save_16bit_model: true" in " ".join(r.output.split())


def test_data_without_pools_is_named_by_the_dry_run_before_any_training(tmp_path):
    """Questions whose gold ids name a corpus (no 'candidates') can be evaluated over an index, not trained on."""
    import json

    data = tmp_path / "questions.jsonl"
    data.write_text(json.dumps({"qid": "q1", "question": "How many moons does Mars have?", "answers": ["two"],
                                "gold_ids": ["p2"]}) + "\n")
    args = ["--set", f"data.path={data}", "--set", "data.format=jsonl"]
    r = _dry(1, *CPU, *args)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert _errors(r) and "no question has its gold evidence among its own 'candidates'" in " ".join(r.output.split())
    assert "data.path is empty" in " ".join(_dry(1, *CPU).output.split())  # no data named: a note, not an error
