"""`mmrag train stage1|stage2` (GRPO on TRL) and `mmrag plot-training RUN_DIR`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmrag_rft.cli._common import console, fail, out

train_app = typer.Typer(help="Two-stage reinforcement fine-tuning (GRPO on TRL).", no_args_is_help=True)

_CONFIG = typer.Option(..., "--config", "-c", help="Training YAML (see configs/).")
_SET = typer.Option(None, "--set", help="Override a config key, e.g. --set grpo.max_steps=10 (repeatable).")
_RESUME = typer.Option(False, "--resume", help="Continue from the last checkpoint in the output folder.")
_OUTPUT = typer.Option(None, "--output", "-o", help="Output folder (overrides output_dir).")


def _run(stage: int, config: Path, overrides: list[str] | None, resume: bool, output: Path | None,
         init: str | None) -> None:
    from mmrag_rft.config import ConfigError
    from mmrag_rft.data.schema import DataError
    from mmrag_rft.training.config import load_train_config

    ovs = list(overrides or [])
    if output is not None:
        ovs.append(f"output_dir={output}")
    try:
        cfg = load_train_config(config, ovs)
    except ConfigError as e:
        raise fail(str(e)) from None
    if init is not None and not Path(init).exists():
        raise fail(f"--init {init}: no such checkpoint folder")
    from mmrag_rft.training.grpo import train

    try:
        res = train(cfg, stage=stage, init=init, resume=resume)
    except (DataError, FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None
    out.print_json(json.dumps(res.to_dict(), default=str))
    console.print(f"stage {stage}: {res.global_step} steps; merged model in {res.merged_dir}; "
                  f"log {res.log_path} (draw it with `mmrag plot-training {res.output_dir}`)")
    if res.stopped_early:
        console.print(f"[yellow]stopped early at {res.stopped_early}[/yellow]; the checkpoints before it are in "
                      f"{res.output_dir} (stop_after_zero_std_steps: null never stops)")


@train_app.command("stage1")
def stage1(config: Path = _CONFIG, overrides: Optional[list[str]] = _SET, resume: bool = _RESUME,
           output: Optional[Path] = _OUTPUT,
           init: Optional[str] = typer.Option(None, "--init", help="Start from this model/run instead of model.path.")
           ) -> None:
    """Stage 1: rule-based GRPO on point-wise yes/no relevance (format + accuracy rewards)."""
    _run(1, config, overrides, resume, output, init)


@train_app.command("stage2")
def stage2(config: Path = _CONFIG,
           init: Optional[str] = typer.Option(None, "--init", help="The stage-1 run folder (or its merged/ model)."),
           overrides: Optional[list[str]] = _SET, resume: bool = _RESUME, output: Optional[Path] = _OUTPUT) -> None:
    """Stage 2: reasoning GRPO on list-wise ranking + answer (format + ranking + answer rewards)."""
    _run(2, config, overrides, resume, output, init)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")

    @app.command("plot-training")
    def plot_training_cmd(run_dir: Path = typer.Argument(..., help="A training run folder (with log.jsonl)."),
                          output: Optional[Path] = typer.Option(None, "--output", "-o", help="PNG path.")) -> None:
        """Draw reward components, KL, completion length and zero-variance share from RUN_DIR/log.jsonl."""
        from mmrag_rft.training.plot import plot_training

        if not (run_dir / "log.jsonl").is_file() and not run_dir.is_file():
            raise fail(f"{run_dir}: no log.jsonl here")
        try:
            dest = plot_training(run_dir, output)
        except ValueError as e:
            raise fail(str(e)) from None
        out.print(str(dest))
