"""README, Extending: the example plugin (examples/plugin/my_plugin.py) adds a reward, a dataset, a backend and a
command, and each works through the `mmrag` CLI exactly as the README tells a user to run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugin"
QUIZ = PLUGIN / "quiz.jsonl"


def _mmrag(*args: str, plugins: str = "my_plugin", cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "MMRAG_PLUGINS": plugins, "PYTHONPATH": str(PLUGIN), "MMRAG_ENGINE": ""}
    r = subprocess.run([sys.executable, "-m", "mmrag_rft.cli", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    r.output = r.stdout + r.stderr  # type: ignore[attr-defined]  # errors go to stderr, tables to stdout
    return r


def test_a_command_from_a_plugin():
    r = _mmrag("quiz-count", str(QUIZ))
    assert r.returncode == 0, r.output
    assert r.stdout.strip() == "2 quiz questions"


def test_a_dataset_is_detected_loaded_and_scored_by_its_registration():
    r = _mmrag("data", "stats", str(QUIZ))
    assert r.returncode == 0, r.output
    stats = json.loads(r.stdout[r.stdout.index("{"):])
    assert stats["format"] == "quiz" and stats["samples"] == 2 and stats["candidates_per_sample"]["total"] == 4
    r = _mmrag("evaluate", str(QUIZ), "--dataset", "quizz", "--out", "unused")
    assert r.returncode == 2 and "unknown dataset 'quizz'; registered: webqa, mmqa, jsonl, quiz" in r.output


def test_a_backend_registered_as_an_engine_answers_through_the_pipeline(tmp_path):
    r = _mmrag("--engine", "overlap", "evaluate", str(QUIZ), "--dataset", "quiz", "--model", "v1",
               "--out", str(tmp_path / "ev"))
    assert r.returncode == 0, r.output
    preds = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert [p["answer"] for p in preds] == ["blue", "green"]  # the overlap judge kept the gold fact each time
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 2 and metrics["overall"]["retr_f1"] == 1.0
    r = _mmrag("--engine", "onnx", "info")
    assert r.returncode == 2 and "unknown engine 'onnx'; registered: hf, vllm, overlap" in r.output


def test_a_reward_is_chosen_by_name_with_its_weight():
    cfg = str(ROOT / "configs" / "stage2_tiny.yaml")
    r = _mmrag("train", "stage2", "--config", cfg, "--dry-run", "--set", "rewards.funcs={format: 1.0, brevity: 0.5}")
    assert r.returncode == 0, r.output
    assert "stage2_format_reward x 1, brevity x 0.5" in r.stdout
    r = _mmrag("train", "stage2", "--config", cfg, "--dry-run", "--set", "rewards.funcs={format: 1.0, brevty: 0.5}")
    assert r.returncode != 0
    assert "no stage-2 reward named 'brevty' (registered: format, ranking, answer, grounding, brevity" in r.output


def test_a_plugin_that_does_not_import_is_one_clear_line():
    r = _mmrag("version", plugins="no_such_plugin_xyz")
    assert r.returncode == 2
    assert "plugin 'no_such_plugin_xyz'" in r.output and "ModuleNotFoundError" in r.output
    assert "Traceback" not in r.output
