"""Per-step JSONL training log (one flushed line per logging step, so a killed run keeps every step it logged),
and the stop that reads it: a run whose every group has stopped varying cannot learn any more."""

from __future__ import annotations

import json
import logging
import math
import resource
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mmrag_rft.config import atomic_write_text

log = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"  # a run folder's training log


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The log's rows; a torn last line (a kill mid-write) is skipped."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class JsonlLogCallback(TrainerCallback):
    """Writes TRL's per-step metrics (each `rewards/<func>/mean`, `kl`, `completions/mean_length`,
    `frac_reward_zero_std`, `loss`, ...) plus wall time per step and the process's peak memory so far to `path`,
    appending (a run the system kills for memory writes nothing more: its last rows show how close it came).

    On resume, rows logged after the checkpoint being resumed from are dropped first: those steps are re-run.
    """

    def __init__(self, path: str | Path, *, stage: int | None = None):
        self.path = Path(path)
        self.stage = stage
        self._t_step: float | None = None
        self._step_times: list[float] = []
        self._t0 = time.time()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        rows = read_log(self.path)
        keep = [r for r in rows if int(r.get("step", 0)) <= state.global_step]
        if len(keep) != len(rows) or (self.path.exists() and rows and not keep and state.global_step == 0):
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        self._t0 = time.time()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t_step = time.time()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._t_step is not None:
            self._step_times.append(time.time() - self._t_step)
            self._t_step = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        row: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3)}
        if self.stage is not None:
            row["stage"] = self.stage
        if self._step_times:
            row["step_time"] = round(sum(self._step_times) / len(self._step_times), 4)
            self._step_times = []
        row.update(peak_memory())
        row.update({k: _clean(v) for k, v in logs.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")
            f.flush()


def peak_memory() -> dict[str, float]:
    """The process's peak resident memory so far (`peak_memory_gb`) and, on a GPU, the peak allocated by torch
    (`peak_gpu_memory_gb`), in GB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_memory_gb": round(kib * (1 if sys.platform == "darwin" else 1024) / 1e9, 3)}  # macOS: bytes
    import torch

    if torch.cuda.is_available():
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 3)
    return out


class ZeroVarianceStop(TrainerCallback):
    """Stops training once `frac_reward_zero_std` averaged over the last `patience` logged steps reaches `threshold`.

    At 1 every group gave all its completions the same reward, every advantage is 0 and, without a KL term, the
    gradient is exactly 0: the policy has collapsed (e.g. one verdict for every prompt) and further steps only
    spend compute. A step or two at 1 happens in healthy runs, hence the window; a collapsed run still has a
    step now and then with one varying group, hence a mean below 1 (the default 0.95). The checkpoints written
    so far stay; `stopped_at` says where and why for the run's result.json.
    """

    def __init__(self, patience: int, threshold: float = 0.95):
        self.patience = patience
        self.threshold = threshold
        self.window: deque[float] = deque(maxlen=patience)
        self.stopped_at: int | None = None
        self.mean_at_stop: float | None = None

    @property
    def reason(self) -> str | None:
        if self.stopped_at is None:
            return None
        return (f"step {self.stopped_at}: {100 * (self.mean_at_stop or 0):.0f}% of the groups had zero reward "
                f"variance over the last {self.patience} logged steps (collapsed policy)")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # a resumed run's state comes back from its checkpoint with the log of the steps it keeps: refill the window
        self.window.clear()
        for row in state.log_history:
            if row.get("frac_reward_zero_std") is not None:
                self.window.append(float(row["frac_reward_zero_std"]))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        v = (logs or {}).get("frac_reward_zero_std")
        if v is None:
            return
        self.window.append(float(v))
        mean = sum(self.window) / len(self.window)
        if len(self.window) == self.patience and mean >= self.threshold and self.stopped_at is None:
            self.stopped_at = state.global_step
            self.mean_at_stop = mean
            control.should_training_stop = True
            log.warning("step %d: %.0f%% of the groups had zero reward variance over the last %d logged steps (the "
                        "policy gives nearly every completion the same reward, so the gradient is ~0): stopping",
                        state.global_step, 100 * mean, self.patience)
