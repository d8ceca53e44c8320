"""`mmrag train` launched as several processes (torchrun DDP; accelerate + DeepSpeed ZeRO-3), on CPU over gloo.

Every process runs the same command: only the main one may set the run folder up, warm up and write the result,
each scores its share of stage 2's negatives, and under ZeRO-3 the saved model must be the whole one, not this
process's shard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TRAIN = ["-m", "mmrag_rft.cli", "--threads", "1", "train"]


def _launch(launcher: list[str], args: list[str], port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "MASTER_PORT": str(port)}
    proc = subprocess.run([*launcher, *TRAIN, *args], capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _check_run(out: Path, steps: int, start: Path | None = None) -> None:
    """One run, written once: its result, one log line per step, no copy of it moved aside by another process,
    and merged/ exactly the start model plus adapter/."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    assert json.loads((out / "result.json").read_text())["global_step"] == steps
    logged = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert logged == list(range(1, steps + 1))
    assert not list(out.parent.glob(f"{out.name}.old-*"))
    base = start or out / "warmup"  # configs/stage1_tiny.yaml warms up: RL's LoRA sits on the warmed-up model
    expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "adapter") \
        .merge_and_unload().state_dict()
    merged = load_file(next((out / "merged").glob("*.safetensors")))
    assert merged and all(t.numel() > 0 for t in merged.values())  # no shard-sized (empty) weights
    for k, t in merged.items():
        assert torch.equal(t, expected[k]), k


def test_two_ddp_processes_train_both_stages_into_one_run(tmp_path, tiny_samples):
    data = tiny_samples
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", "29521"]
    s1 = tmp_path / "stage1"
    _launch(torchrun, ["stage1", "--config", "configs/stage1_tiny.yaml", "--set", f"data.path={data}",
                       "--output", str(s1)], 29521)
    _check_run(s1, 2)
    # each process scores half of stage 2's negatives with the stage-1 model; the shards end merged in one cache
    s2 = tmp_path / "stage2"
    _launch(torchrun, ["stage2", "--config", "configs/stage2_tiny.yaml", "--init", str(s1), "--set",
                       f"data.path={data}", "--set", "data.negatives=stage1", "--set", "warmup.enabled=false",
                       "--output", str(s2)], 29521)
    assert json.loads((s2 / "result.json").read_text())["global_step"] == 2
    scores = json.loads((s2 / "stage1_scores.json").read_text())["scores"]
    train_qids = set(json.loads((s2 / "split.json").read_text())["train"])
    assert set(scores) == train_qids and all(scores.values())
    assert not list(s2.glob("stage1_scores.shard*"))


def test_deepspeed_zero3_trains_both_stages_and_saves_the_whole_model(tmp_path, tiny_samples):
    pytest.importorskip("deepspeed")
    data = tiny_samples
    out = tmp_path / "zero3"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/zero3.yaml",
              "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "29523"]
    _launch(launch, ["stage1", "--config", "configs/stage1_tiny.yaml", "--set", f"data.path={data}",
                     "--output", str(out)], 29523)
    _check_run(out, 2)
    # stage 2 under ZeRO-3, its negatives ordered by another model (as the reader recipe does), scored in two shares
    s2 = tmp_path / "zero3_stage2"
    _launch(launch, ["stage2", "--config", "configs/stage2_tiny.yaml", "--init", str(out), "--set",
                     f"data.path={data}", "--set", "data.negatives=stage1", "--set",
                     f"data.negatives_model={out / 'merged'}", "--set", "warmup.enabled=false", "--output", str(s2)],
            29523)
    _check_run(s2, 2, start=out / "merged")
    scores = json.loads((s2 / "stage1_scores.json").read_text())
    assert scores["model"].startswith(str(out / "merged")) and set(scores["scores"]) == set(
        json.loads((s2 / "split.json").read_text())["train"])
