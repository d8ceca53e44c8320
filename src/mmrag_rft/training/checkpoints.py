"""A run folder over time: its checkpoints, what makes one resumable, and what a resumed run may change."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from mmrag_rft.training.config import TrainConfig
from mmrag_rft.training.run_log import LOG_NAME

log = logging.getLogger(__name__)


def checkpoints(output_dir: Path) -> list[Path]:
    """The run's checkpoint-N folders in step order (name order would put checkpoint-100 before checkpoint-90)."""
    if not output_dir.is_dir():
        return []
    found = sorted((int(m.group(1)), d) for d in output_dir.iterdir()
                   if d.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", d.name)))
    return [d for _, d in found]


def checkpoint_problem(d: Path) -> str | None:
    """Why checkpoint folder `d` cannot be resumed from (None if it can): the Trainer writes trainer_state.json
    last, so a folder without it was torn by a kill mid-save; a broken state or weights file names itself."""
    state = d / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json: killed while saving?"
    try:
        int(json.loads(state.read_text())["global_step"])
    except (ValueError, KeyError, TypeError, OSError) as e:
        return f"{state} is unreadable ({type(e).__name__}: {e})"
    weights = [d / n for n in ("adapter_model.safetensors", "model.safetensors") if (d / n).is_file()]
    if not weights:
        return "no adapter_model.safetensors or model.safetensors"
    from safetensors import safe_open

    try:
        with safe_open(str(weights[0]), framework="pt") as f:
            f.keys()
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a torn header
        return f"{weights[0]} is unreadable ({type(e).__name__}: {e})"
    return None


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint-N that can be resumed from; broken newer ones are skipped with a warning naming why."""
    for d in reversed(checkpoints(output_dir)):
        problem = checkpoint_problem(d)
        if problem is None:
            return d
        log.warning("%s cannot be resumed from (%s); falling back to the one before it", d, problem)
    return None


def finished_run(out: Path, ckpt: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The saved result.json when `--resume` finds the run already done (last checkpoint at max_steps, model
    exported).

    The Trainer checks max_steps only after a step, so resuming a finished run would train one step past it and
    overwrite the exported model; a finished run is returned as it is instead.
    """
    if cfg.grpo.max_steps <= 0 or not (out / "result.json").is_file() or not (out / "merged/config.json").is_file():
        return None
    try:
        step = checkpoint_step(ckpt)
        saved = json.loads((out / "result.json").read_text())
        done = int(saved["global_step"])
    except (ValueError, KeyError, TypeError):
        return None
    if step < cfg.grpo.max_steps or done != step:
        return None
    log.warning("%s already finished at step %d (max_steps %d): nothing to resume; raise grpo.max_steps to train "
                "further", out, step, cfg.grpo.max_steps)
    return saved


def checkpoint_step(ckpt: Path) -> int:
    return int(json.loads((ckpt / "trainer_state.json").read_text())["global_step"])


def load_checkpoint_weights(model: Any, ckpt: Path, cfg: TrainConfig) -> Any:
    """The trained weights of a checkpoint, on the model as `train` built it (LoRA adapter or full weights)."""
    if cfg.lora.enabled:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(model, load_peft_weights(str(ckpt)))
        return model
    from mmrag_rft.training.policy import load_policy

    return load_policy(ckpt, cfg)


# What makes a folder hold a run; warmup/ and stage1_scores.json are caches checked by key, so they stay.
RUN_ENTRIES = (LOG_NAME, "result.json", "merged", "adapter", "split.json", "config.yaml")


def prepare_output(out: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """Refuse to start a fresh run over an old one unless `overwrite`, which moves the old run aside (returned)."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in the folder, --overwrite starts over: give one of them")
    old = [p for p in out.iterdir() if p.name in RUN_ENTRIES or re.fullmatch(r"checkpoint-\d+", p.name)] \
        if out.is_dir() else []
    if resume or not old:
        return None
    if not overwrite:
        raise ValueError(f"{out}: already holds a training run ({', '.join(sorted(p.name for p in old)[:4])}); "
                         "pass --resume to continue it or --overwrite to start over (the old run is moved aside)")
    aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        aside, n = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}"), n + 1
    aside.mkdir(parents=True)
    for p in old:
        os.replace(p, aside / p.name)
    log.warning("%s: the previous run was moved to %s", out, aside)
    return aside


# Keys a resumed run may change: how long it runs and how it saves and logs. Anything else (model, data, split,
# LoRA shape, optimiser, rewards) would make the checkpoint and the record disagree, so resume refuses it.
RESUMABLE_KEYS = ("grpo.max_steps", "grpo.num_train_epochs", "grpo.save_steps", "grpo.save_total_limit",
                  "grpo.logging_steps", "grpo.log_completions", "grpo.report_to", "output_dir",
                  "stop_after_zero_std_steps", "stop_zero_std_mean")


def check_resume_config(saved_path: Path, cfg: TrainConfig) -> None:
    """Refuse to resume a run with a config that changes what the run is; name every changed key."""
    import yaml

    from mmrag_rft.config import flatten, to_dict

    if not saved_path.is_file():
        return
    try:
        saved = flatten(yaml.safe_load(saved_path.read_text()) or {})
    except yaml.YAMLError as e:
        raise ValueError(f"{saved_path}: not valid YAML ({e}); cannot check what --resume would continue") from None
    new = flatten(to_dict(cfg))
    changed = sorted(k for k in set(saved) | set(new)
                     if k not in RESUMABLE_KEYS and k in saved and saved.get(k) != new.get(k))
    if changed:
        diff = "; ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        raise ValueError(f"{saved_path.parent}: --resume with another config ({diff}); only "
                         f"{', '.join(RESUMABLE_KEYS)} may change on resume. Start a new run (another --output, or "
                         "--overwrite) to change the others")
