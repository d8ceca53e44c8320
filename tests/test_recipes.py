"""The recipes as a user runs them (`./run.sh recipe` / `recipe-stage2` / `train` call these scripts), on the tiny
model: train, choose and measure, export, and the same command again continues instead of starting over."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _recipe(env: dict[str, str], script: str = "scripts/recipe_stage2.sh") -> subprocess.CompletedProcess:
    if not (ROOT / ".venv" / "bin" / "mmrag").exists():
        pytest.skip("the recipes run the project's .venv (./run.sh setup)")
    return subprocess.run(["bash", script], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=1200)


def test_recipe_stage1_trains_chooses_the_filter_point_on_training_questions_and_exports(tmp_path, shared_data):
    run, out = tmp_path / "run", tmp_path / "out"
    env = {"RUN": str(run), "OUT": str(out), "DATA": str(shared_data / "webqa" / "val_records.json.gz"),
           "CONFIG": "configs/stage1_tiny.yaml", "EXTRA": "--set data.limit=10", "LIMIT": "2", "COMMIT": "abc1234"}
    first = _recipe(env, "scripts/recipe_stage1.sh")
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = json.loads((out / "mmrag_model.json").read_text())
    assert manifest["stage"] == 1 and manifest["training"]["command"].startswith("./run.sh recipe")
    assert manifest["pipeline"]["filter"]["top_k"] == 2 and manifest["pipeline"]["sources"] == "filter"
    chosen = json.loads((run / "operating_point.json").read_text())
    assert chosen and (run / "heldout.json").is_file() and (out / "README.md").is_file()
    adapter = (out / "adapter_model.safetensors").read_bytes()
    again = _recipe(env, "scripts/recipe_stage1.sh")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "adapter_model.safetensors").read_bytes() == adapter


def test_recipe_stage2_trains_exports_and_measures_then_reruns_without_training_again(tmp_path, shared_data):
    run, out = tmp_path / "run", tmp_path / "out"
    env = {"RUN": str(run), "OUT": str(out), "DATA": str(shared_data / "webqa" / "val_records.json.gz"),
           "CONFIG": "configs/stage2_tiny.yaml", "RELEASED": "tiny-lm", "COMPARE_SHIPPED": "0", "THREADS": "1",
           "EXTRA": "--set data.limit=12", "ABLATE_ARGS": "--limit 1", "COMMIT": "abc1234"}
    first = _recipe(env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[recipe-stage2] done" in first.stderr
    manifest = json.loads((out / "mmrag_model.json").read_text())
    assert manifest["stage"] == 2 and manifest["training"]["commit"] == "abc1234"
    assert manifest["training"]["command"].startswith("./run.sh recipe-stage2")
    systems = json.loads((run / "ablate" / "ablation.json").read_text())["systems"]
    assert set(systems) == {"retriever_topk", "reader_as_released", "reader_as_released_rank", "trained_reader",
                            "trained_reader_rank"}
    assert systems["trained_reader"]["overrides"] == [f'stage2_model="{out}"']
    assert systems["reader_as_released"]["overrides"] == ['stage2_model="tiny-lm"']
    assert "trained_reader" in (out / "README.md").read_text()  # the table went into the exported card
    adapter = (out / "adapter_model.safetensors").read_bytes()

    again = _recipe(env)  # a finished run resumes at its last checkpoint: nothing is trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "adapter_model.safetensors").read_bytes() == adapter
    assert json.loads((run / "ablate" / "ablation.json").read_text())["systems"]["trained_reader"]["qa_acc"] == \
        systems["trained_reader"]["qa_acc"]


def test_a_training_run_the_system_kills_is_named_as_most_likely_out_of_memory(tmp_path):
    fake = tmp_path / ".venv" / "bin" / "mmrag"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/usr/bin/env bash\nkill -KILL $$\n")  # what the kernel's OOM killer does to a run
    fake.chmod(0o755)
    script = f"set -euo pipefail; THREADS=1; . {ROOT}/scripts/_train_or_resume.sh; train_or_resume stage2 runs/x"
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 137
    assert "killed by the system (SIGKILL), most likely for memory" in r.stderr
    assert "runs/x/log.jsonl" in r.stderr and "peak_memory_gb" in r.stderr
