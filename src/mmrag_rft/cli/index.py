"""CLI commands for this concept (registered by mmrag_rft.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
