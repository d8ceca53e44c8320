"""The zero-variance stop, replayed over the per-step logs of real CPU runs (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState

from mmrag_rft.config import ConfigError
from mmrag_rft.training.config import load_train_config
from mmrag_rft.training.run_log import ZeroVarianceStop, read_log

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"


def _replay(log: str, patience: int, threshold: float = 0.95) -> tuple[int | None, int]:
    """(step the guard stopped at, last step the trainer would have run)."""
    guard, state = ZeroVarianceStop(patience, threshold), TrainerState()
    for row in read_log(RESULTS / log):
        state.global_step = row["step"]
        control = TrainerControl()
        guard.on_log(None, state, control, logs=row)
        if control.should_training_stop:
            return guard.stopped_at, row["step"]
    return guard.stopped_at, state.global_step


def test_stops_a_collapsed_run_but_not_a_run_with_isolated_zero_variance_steps():
    # label-balanced lr-5e-4 run: isolated all-zero-variance steps at 25, 33, 53, 55; collapsed from step 59 on
    assert _replay("rl_stage1_nothink_top8_balanced_lr5e-4.log.jsonl", 10) == (68, 68)
    assert _replay("rl_stage1_nothink_top8_balanced_lr5e-4.log.jsonl", 1) == (25, 25)
    # lr-1e-3 run: collapsed from step 7, stopped by hand at 14 (8 steps at 1.0)
    assert _replay("rl_stage1_nothink_top8_lr1e-3.log.jsonl", 10) == (None, 14)
    assert _replay("rl_stage1_nothink_top8_lr1e-3.log.jsonl", 8) == (14, 14)


def test_a_window_mean_stops_a_collapse_that_a_run_of_ones_misses():
    # 8 completions per group: collapsed from step 35, but steps 41 and 47 had one varying group (0.75)
    assert _replay("rl_stage1_nothink_top8_balanced_g8.log.jsonl", 10, threshold=1.0) == (None, 51)
    assert _replay("rl_stage1_nothink_top8_balanced_g8.log.jsonl", 10) == (43, 43)


def test_patience_is_configured_and_checked():
    assert load_train_config(ROOT / "configs/stage1_tiny.yaml").stop_after_zero_std_steps == 10
    assert load_train_config(None, ["stop_after_zero_std_steps=null"]).stop_after_zero_std_steps is None
    with pytest.raises(ConfigError, match=r"override stop_after_zero_std_steps=0: must be >= 1"):
        load_train_config(None, ["stop_after_zero_std_steps=0"])
    assert load_train_config(None, []).stop_zero_std_mean == 0.95
    with pytest.raises(ConfigError, match=r"override stop_zero_std_mean=1\.5: must be within"):
        load_train_config(None, ["stop_zero_std_mean=1.5"])


def test_a_resumed_run_refills_the_window_from_the_steps_it_keeps():
    fresh_state, resumed_state = TrainerState(), TrainerState()
    # resuming from checkpoint-9: the Trainer restores its state, log history included, before on_train_begin
    resumed_state.log_history = [{"step": s, "frac_reward_zero_std": 1.0} for s in range(1, 10)]
    fresh_state.global_step = resumed_state.global_step = 9
    fresh, resumed = ZeroVarianceStop(10), ZeroVarianceStop(10)
    for guard, state in ((fresh, fresh_state), (resumed, resumed_state)):
        guard.on_train_begin(None, state, TrainerControl())
        state.global_step = 10
        guard.on_log(None, state, TrainerControl(), logs={"frac_reward_zero_std": 1.0})
    assert fresh.stopped_at is None and fresh.reason is None
    assert resumed.stopped_at == 10
    assert resumed.reason.startswith("step 10: 100% of the groups had zero reward variance over the last 10")


def test_a_bad_override_is_named_as_typed(tmp_path):
    with pytest.raises(ConfigError, match=r"^override grpo\.learning_rate=abc: expected float"):
        load_train_config(ROOT / "configs/stage1_cpu.yaml", ["grpo.learning_rate=abc"])
    with pytest.raises(ConfigError, match=r"^override stop_zero_std_mean=1\.5: must be within"):
        load_train_config(ROOT / "configs/stage1_cpu.yaml", ["stop_zero_std_mean=1.5"])
    bad = tmp_path / "bad.yaml"  # a bad value in the file is still the file's
    bad.write_text("grpo:\n  learning_rate: abc\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml\.grpo\.learning_rate: expected float"):
        load_train_config(bad, ["grpo.max_steps=3"])
