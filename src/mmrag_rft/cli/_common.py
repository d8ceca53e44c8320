"""Helpers every CLI module shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

console = Console(stderr=True)
out = Console()
MODEL_HELP = ("default (the shipped trained model) | base (untrained SmolLM2-135M-Instruct) | reader (the shipped "
              "stage-2 model) | qwen2.5-coder-0.5b (the untrained reader) | tiny-vlm | tiny-lm | "
              "a model, run or adapter folder | a hub id.")


def cell(v, prefix: str = "") -> str:
    """A value as a person reads it in a table cell: nested keys dotted, one `key value` per line, lists
    comma-separated."""
    if isinstance(v, dict):
        return "\n".join(cell(x, f"{prefix}{k}.") if isinstance(x, dict) else f"{prefix}{k} {cell(x)}"
                         for k, x in v.items())
    if v is None:
        return "-"
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line and return the exit to raise: `raise fail("...")` (never a traceback for bad input)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_backend_or_fail(model: str):
    """The policy backend `model` names (loaded once per process); a bad spec is one clear line, not a traceback."""
    from mmrag_rft.models.loading import load_backend

    with console.status(f"loading model {model} ..."):
        try:
            return load_backend(model)
        except (FileNotFoundError, ValueError, OSError) as e:
            raise fail(f"model {model!r}: {e}") from None


def check_dataset(dataset: str) -> None:
    """An unknown `--dataset` is a clear error naming the registered ones (data/datasets.py)."""
    from mmrag_rft.data.datasets import get_dataset

    try:
        get_dataset(dataset)
    except ValueError as e:
        raise fail(f"--dataset: {e}") from None


def open_index_or_fail(path: object):
    """Load an index; a stale or missing one is user input, reported in one line, not a crash."""
    from mmrag_rft.retrieval.index import HybridIndex

    try:
        return HybridIndex.load(path)
    except Exception as e:
        raise fail(f"index {path}: {e}") from None


def open_query_image_or_fail(path: object):
    """The optional query image as RGB, or None; an unreadable file is one clear line."""
    if path is None:
        return None
    from mmrag_rft.data.images import open_image
    from mmrag_rft.data.schema import DataError

    try:
        return open_image(path, where=f"query image {path}")
    except DataError as e:
        raise fail(str(e)) from None


def load_reader_or_fail(cfg):
    """The stage-2 model a pipeline config names, loaded now rather than on the first question; one that is not
    installed is said once and left to the pipeline, which lets the stage-1 model read (`pipeline.load_reader`)."""
    if not cfg.stage2_model:
        return None
    from mmrag_rft.pipeline import load_reader

    with console.status(f"loading stage-2 model {cfg.stage2_model} ..."):
        try:
            reader, why = load_reader(cfg.stage2_model)
        except (ValueError, OSError) as e:
            raise fail(f"stage2_model {cfg.stage2_model!r}: {e}") from None
    if why:
        console.print(f"[yellow]{why}[/]", highlight=False, soft_wrap=True)
    return reader


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int], Callable[[], None]]]:
    """A rich progress display on stderr; `task(description, total)` adds a bar and returns its advance()."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as prog:
        def task(description: str, total: int) -> Callable[[], None]:
            tid = prog.add_task(description, total=total)
            return lambda: prog.advance(tid)

        yield task
