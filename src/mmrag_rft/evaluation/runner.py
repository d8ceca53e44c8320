"""Run the pipeline over a benchmark file with its own candidate pools; resumable.

Each finished question is appended (and flushed) to predictions.jsonl as soon as it is done, so a killed
run loses at most the question in flight; a re-run skips every qid already there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mmrag_rft.data.schema import Sample


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """Predictions written so far; a torn last line (killed mid-write) is dropped, not fatal."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "qid" in row:
                done[str(row["qid"])] = row
    return done


def _truncate_torn_tail(path: Path) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(cut)


def prediction_row(sample: Sample, result: Any) -> dict[str, Any]:
    from mmrag_rft.prompts import stage2_prompt
    from mmrag_rft.rewards import grounding_score

    r = result.to_dict()
    by_id = {c.id: c for c in sample.candidates}
    kept = [by_id[i] for i in r.get("kept_ids") or [] if i in by_id]  # what stage 2 read, in the order it read them
    shown = stage2_prompt(sample.question, kept).meta["evidence"]
    r["reasoning_grounding"] = grounding_score(r.get("reasoning") or "", sample.question, shown)
    r["qid"] = sample.qid
    r["gold_ids"] = list(sample.gold_ids)
    r["answers"] = list(sample.answers)
    r["category"] = sample.category
    r["dataset"] = sample.dataset
    r["meta"] = {k: v for k, v in sample.meta.items() if isinstance(v, (str, int, float, bool, list))}
    return r


def run(samples: Iterable[Sample], ask: Callable[[Sample], Any], out_dir: str | os.PathLike[str], *,
        total: int | None = None, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Answer every sample not yet in out_dir/predictions.jsonl; return all predictions (old + new)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_path = out / "predictions.jsonl"
    _truncate_torn_tail(pred_path)
    done = read_predictions(pred_path)
    todo = [s for s in samples if s.qid not in done]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with pred_path.open("a", encoding="utf-8") as f, Progress(
        TextColumn("[bold]evaluate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        disable=not progress, transient=False,
    ) as bar:
        task = bar.add_task("evaluate", total=len(todo))
        for s in todo:
            row = prediction_row(s, ask(s))
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            done[s.qid] = row
            bar.advance(task)
    return done
