"""How stage 2's "hardest" negatives are ordered: by a stage-1 model's P(yes) (cached per model) or by the
retriever."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmrag_rft.config import atomic_write_text
from mmrag_rft.training.config import TrainConfig

log = logging.getLogger(__name__)


def stage1_scores_with_model(get_model: Callable[[], Any], processing_class: Any, samples: list[Any], *,
                             cache: Path | None = None, model_key: str = "",
                             layout: str = "default") -> dict[str, dict[str, float]]:
    """P(yes) of every candidate (score-style stage-1 prompt, captions only): orders stage 2's negatives.

    `layout` is the stage-1 prompt layout the scoring model was trained with (stage 2's `data.layout`).

    The scores go to `cache` as they are computed (JSON, atomic, keyed by `model_key`), so a resumed or
    re-run stage 2 does not score the whole training set again. `get_model` is called (to load the model)
    only if some question is not in the cache yet. Launched as several processes, each scores its share of the
    questions on its own device into a shard file next to `cache`; the main process then merges the shards into
    `cache` and every process returns all the scores.
    """
    from mmrag_rft.training.processes import process_state

    state = process_state()
    several = state.num_processes > 1 and cache is not None
    shard = cache.with_name(f"{cache.stem}.shard{state.process_index}-of-{state.num_processes}.json") if several \
        else cache
    scores = _read_scores(cache, model_key)
    for part in _shards(cache) if cache is not None else []:  # an interrupted sharded run
        scores.update(_read_scores(part, model_key))
    todo = [s for s in samples if s.qid not in scores]
    if several:
        state.wait_for_everyone()  # every process has read the same files before any writes its shard
    mine = todo[state.process_index::state.num_processes] if several else todo

    def save(new: dict[str, dict[str, float]]) -> None:
        if shard is not None:
            atomic_write_text(shard, json.dumps({"model": model_key, "scores": {**scores, **new}}))

    if mine:
        scores.update(_score(get_model, processing_class, mine, state.device, layout, save, cached=len(scores)))
    if todo and several:  # the shards merged into the cache (one process saves straight into it)
        state.wait_for_everyone()
        for part in _shards(cache):
            scores.update(_read_scores(part, model_key))
        if state.is_main_process:
            atomic_write_text(cache, json.dumps({"model": model_key, "scores": scores}))
        state.wait_for_everyone()
    if todo and cache is not None and state.is_main_process:
        for part in _shards(cache):
            part.unlink()
    return {s.qid: scores[s.qid] for s in samples}


def _shards(cache: Path) -> list[Path]:
    return sorted(cache.parent.glob(f"{cache.stem}.shard*-of-*.json"))


def _read_scores(path: Path | None, model_key: str) -> dict[str, dict[str, float]]:
    """A score file's scores when they were made by `model_key` (nothing otherwise)."""
    if path is None or not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        log.warning("%s is not valid JSON: stage-1 scores are computed again", path)
        return {}
    return saved.get("scores", {}) if saved.get("model") == model_key else {}


def _score(get_model: Callable[[], Any], processing_class: Any, samples: list[Any], device: Any, layout: str,
           save: Callable[[dict[str, dict[str, float]]], None], *, cached: int) -> dict[str, dict[str, float]]:
    """Score `samples` on `device` (this process's accelerator), saving what is done every 25 questions."""
    from rich.progress import Progress

    from mmrag_rft.models.hf import HFBackend
    from mmrag_rft.prompts import stage1_prompt

    model = get_model()
    backend = HFBackend(model, processor=processing_class, device=str(device), dtype="auto")
    scores: dict[str, dict[str, float]] = {}
    with Progress(transient=True) as prog:
        task = prog.add_task(f"stage-1 P(yes) for stage-2 negatives ({cached} cached)", total=len(samples))
        for i, s in enumerate(samples, 1):
            p = backend.score_yes_no([stage1_prompt(s.question, c, style="score", layout=layout) for c in s.candidates])
            scores[s.qid] = {c.id: float(x) for c, x in zip(s.candidates, p)}
            prog.advance(task)
            if i % 25 == 0:
                save(scores)
    save(scores)
    return scores


def negatives_from_model(cfg: TrainConfig, samples: list[Any], out: Path) -> dict[str, dict[str, float]]:
    """Stage-1 P(yes) from `data.negatives_model` (its own tokenizer and the prompt layout its manifest names),
    for a stage-2 policy that is another model: only the tokenizer loads unless the cache lacks scores."""
    from mmrag_rft.models.loading import load_model, load_processor, trained_layout

    spec = cfg.data.negatives_model
    layout = trained_layout(spec) or cfg.data.layout
    tok = load_processor(spec, padding_side="left")
    return stage1_scores_with_model(lambda: load_model(spec, dtype=cfg.model.dtype), tok, samples,
                                    cache=out / "stage1_scores.json", model_key=f"{spec}|layout={layout}",
                                    layout=layout)


def retrieval_order(sample: Any) -> list[str]:
    from mmrag_rft.retrieval.pool import rank_pool

    return [h.id for h in rank_pool(sample.question, sample.candidates, top_n=len(sample.candidates))]


def stage2_negative_scores(cfg: TrainConfig, samples: list[Any], out: Path, *, init_src: Path, policy: Any,
                           processing_class: Any) -> dict[str, dict[str, float]] | None:
    """Stage-1 P(yes) that orders stage 2's negatives (None unless `data.negatives` is stage1): from
    `data.negatives_model` when it names one, else from the --init model itself, never from its format-warmed-up
    copy (`policy` is used only when it is that model; otherwise the init model is reloaded if the cache lacks
    scores)."""
    from mmrag_rft.models.loading import trained_layout
    from mmrag_rft.training.policy import load_policy

    if cfg.data.negatives != "stage1":
        return None
    if cfg.data.negatives_model:
        return negatives_from_model(cfg, samples, out)
    scorer = (lambda: policy) if policy is not None else (lambda: load_policy(init_src, cfg))
    layout = trained_layout(init_src) or cfg.data.layout  # named in the cache key only when not default
    key = str(init_src) if layout == "default" else f"{init_src}|layout={layout}"
    return stage1_scores_with_model(scorer, processing_class, samples, cache=out / "stage1_scores.json",
                                    model_key=key, layout=layout)
