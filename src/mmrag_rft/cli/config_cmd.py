"""`mmrag config show stage1|stage2|pipeline`: every key of a config with its value, default and help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmrag_rft.cli._common import fail, out

config_app = typer.Typer(help="Inspect configs: keys, values, defaults and what each one does.", no_args_is_help=True)
KINDS = ("stage1", "stage2", "pipeline")


@config_app.command("show")
def show(kind: str = typer.Argument(..., help="stage1 | stage2 | pipeline"),
         config: Optional[Path] = typer.Option(None, "--config", help="A YAML config (its base included)."),
         overrides: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE on top (repeatable)."),
         changed: bool = typer.Option(False, "--changed", help="Only keys whose value differs from the default."),
         as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Print a config resolved from its defaults, --config and --set, key by key with the default and help."""
    from rich.table import Table

    from mmrag_rft.config import ConfigError, describe, load

    if kind not in KINDS:
        raise fail(f"config kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "pipeline":
        from mmrag_rft.pipeline import PipelineConfig as cls
    else:
        from mmrag_rft.training.config import TrainConfig as cls
    try:
        cfg = load(cls, config, overrides or [])
    except (ConfigError, ValueError) as e:
        raise fail(str(e)) from None
    rows = [r for r in describe(cfg) if not changed or r[1] != r[2]]
    if kind != "pipeline":
        trl_help = _trl_help()  # grpo keys are TRL's own fields: TRL documents them
        rows = [(k, v, d, h or trl_help.get(k.removeprefix("grpo."), "") if k.startswith("grpo.") else h)
                for k, v, d, h in rows]
    if as_json:
        print(json.dumps([{"key": k, "value": v, "default": d, "help": h} for k, v, d, h in rows], indent=2,
                         default=str))
        return
    t = Table(title=f"{kind} config" + (f" ({config})" if config else ""))
    for col in ("key", "value", "default", "help"):
        t.add_column(col, overflow="fold")
    for k, v, d, h in rows:
        t.add_row(k, json.dumps(v, default=str), "" if v == d else json.dumps(d, default=str), h)
    out.print(t)


def _trl_help() -> dict[str, str]:
    import dataclasses

    try:
        from trl import GRPOConfig
    except ImportError:
        return {}
    return {f.name: " ".join(str(f.metadata.get("help", "")).split()) for f in dataclasses.fields(GRPOConfig)}


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
