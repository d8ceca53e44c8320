"""Shared helpers for the benchmark scripts: machine description, policy loading, timers, tables, JSON output.

Absolute times on a shared CPU are noise; every script reports ratios measured inside one run, and writes
the machine it ran on next to the numbers so a reader can judge them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared"
WEBQA_RECORDS = SHARED / "data" / "webqa" / "val_records.json.gz"
MMQA_DEV = SHARED / "data" / "mmqa" / "MMQA_dev.jsonl.gz"
CAPTION_NOTE = "captions stand in for pixels"
TITLE_NOTE = "image titles stand in for images"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))


def _version(mod: str) -> str | None:
    try:
        m = __import__(mod)
        return getattr(m, "__version__", None)
    except Exception:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        import torch

        threads = torch.get_num_threads()
        cuda = torch.cuda.is_available()
        gpu = torch.cuda.get_device_name(0) if cuda else None
    except Exception:
        threads, cuda, gpu = None, False, None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_count": os.cpu_count(), "cpu_model": _cpu_model(), "mem_gib": _mem_gib(),
        "torch_threads": threads, "cuda": cuda, "gpu": gpu,
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": _version("torch"), "transformers": _version("transformers"), "trl": _version("trl"),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "load_average_at_start": load,
    }


def command_line() -> str:
    """The exact command that produced a result file, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(ROOT))
    except ValueError:
        script_s = str(script)
    return " ".join([".venv/bin/python", script_s, *map(shlex.quote, sys.argv[1:])])


def write_result(name: str, payload: dict[str, Any], out: str | Path | None = None) -> Path:
    """benchmarks/results/<name>.json (atomic), with machine and command added."""
    from mmrag_rft.config import atomic_write_text

    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "command": command_line(), "machine": machine(), **payload}
    atomic_write_text(path, json.dumps(doc, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    if isinstance(x, Path):
        return str(x)
    return str(x)


class Timer:
    """Accumulating wall-clock timers by name: `with t("stage1"): ...`."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def add(self, name: str, seconds: float) -> None:
        self.total[name] = self.total.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1


def add_threads_flag(ap: Any) -> None:
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads (0 = torch default). 1 by default: on a shared, oversubscribed "
                         "CPU, multi-threaded kernels wait at barriers and make timings erratic")


def set_threads(n: int) -> None:
    """Pin intra-op threads for the timed process and any child it starts (env read at torch import)."""
    if n and n > 0:
        os.environ["OMP_NUM_THREADS"] = str(n)
        os.environ["MKL_NUM_THREADS"] = str(n)
        import torch

        torch.set_num_threads(n)


def load_policy(spec: str = "default") -> Any:
    """The policy backend the pipeline uses (`models.loading.load_backend`)."""
    from mmrag_rft.models.loading import load_backend

    return load_backend(spec)


def load_webqa(path: str | Path = WEBQA_RECORDS, limit: int | None = None) -> list[Any]:
    from mmrag_rft.data.loaders import load_samples

    samples = list(load_samples(str(path), format="webqa"))
    return samples[:limit] if limit else samples


def run_side(samples: list[Any], run_dir: str | Path, side: str = "val") -> list[Any]:
    """The samples on one side of a training run's question split (its split.json): `val` = never trained on."""
    split = Path(run_dir) / "split.json"
    if not split.is_file():
        raise SystemExit(f"--heldout {run_dir}: no split.json there (not a training run folder)")
    keep = set(json.loads(split.read_text())[side])
    return [s for s in samples if s.qid in keep]


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(str(h))
    for r in rows:
        t.add_row(*[fmt(x) for x in r])
    Console().print(t)


def fmt(x: Any) -> str:
    if isinstance(x, float):
        if x != x:
            return "nan"
        return f"{x:.3f}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def progress() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True)


def bootstrap_95(diff: list[float], resamples: int = 5000) -> tuple[float, float]:
    """A paired bootstrap 95% interval of the mean of per-question differences (seed 0)."""
    import random

    rng = random.Random(0)
    boot = sorted(sum(rng.choice(diff) for _ in diff) / len(diff) for _ in range(resamples))
    cut = int(0.025 * resamples)
    return boot[cut], boot[-cut]
