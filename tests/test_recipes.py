"""The stage-2 recipe as a user runs it (`./run.sh recipe-stage2` calls this script), on the tiny model: train,
export, measure held out, and the same command again continues instead of starting over."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _recipe(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/recipe_stage2.sh"], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=1200)


def test_recipe_stage2_trains_exports_and_measures_then_reruns_without_training_again(tmp_path, shared_data):
    if not (ROOT / ".venv" / "bin" / "mmrag").exists():
        pytest.skip("the recipes run the project's .venv (./run.sh setup)")
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
