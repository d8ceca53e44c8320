"""What an interrupted index build leaves behind, and putting it right on the next build or load.

A build writes into a hidden `.NAME.build-*` folder beside the index (with the builder's pid in it) and swaps it
in by two renames: the old index to `.NAME.old-*`, the new one into place. A killed build leaves its build
folder; a kill between the two renames leaves no index and the old one hidden. Both are recovered here.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

PID_FILE = "builder.pid"


def mark_builder(build_dir: Path) -> None:
    """Record which process owns a build folder, so a later run can tell a dead build from a live one."""
    (build_dir / PID_FILE).write_text(str(os.getpid()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _owner_dead(build_dir: Path) -> bool:
    try:
        pid = int((build_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return True  # no pid: a build that died before writing it, or one from before pids were recorded
    return not _alive(pid)


def remove_stale_builds(out: Path) -> list[Path]:
    """Delete `.NAME.build-*` folders of `out` whose builder is gone; returns what was removed."""
    removed = []
    for d in out.parent.glob(f".{out.name}.build-*"):
        if d.is_dir() and _owner_dead(d):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
            log.warning("removed %s, left by an interrupted index build", d)
    return removed


def restore_interrupted_swap(out: Path, manifest_name: str) -> Path | None:
    """If `out` is gone but a `.NAME.old-*` index survived a kill mid-swap, put the newest one back."""
    if out.exists():
        return None
    olds = sorted((d for d in out.parent.glob(f".{out.name}.old-*") if (d / manifest_name).is_file()),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    if not olds:
        return None
    os.rename(olds[0], out)
    log.warning("restored %s from %s (an index swap was interrupted)", out, olds[0])
    return olds[0]
