"""Both RL stages on TRL's GRPOTrainer: data -> model (+LoRA) -> optional format warm-up -> GRPO -> adapter + merged.

`train` reads top to bottom as its phases; the policy comes from `training.policy` (the one loader, as the config
asks), LoRA from
`training.lora`, checkpoints and resume rules from `training.checkpoints`, stage 2's negatives from
`training.negatives`.

Stage 2 starts from stage 1 by *merging*: `--init` names the stage-1 run (or its `merged/` folder); the stage-1
LoRA is already folded into those weights, and stage 2 adds a fresh LoRA on top. The merged stage-1 model is
also the KL reference of stage 2 (TRL uses the adapter-disabled model as reference when beta > 0).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmrag_rft.config import atomic_write_text, dump
from mmrag_rft.training.checkpoints import (check_resume_config, checkpoint_step, finished_run, last_checkpoint,
                                            load_checkpoint_weights, prepare_output)
from mmrag_rft.training.config import TrainConfig
from mmrag_rft.training.examples import (group_by_question, interleave_by_label, split_by_question, stage1_rows,
                                         stage2_rows, to_dataset)
from mmrag_rft.training.lora import add_lora
from mmrag_rft.training.negatives import retrieval_order, stage2_negative_scores
from mmrag_rft.training.policy import load_policy, load_policy_processor
from mmrag_rft.training.processes import is_zero3, process_state
from mmrag_rft.training.run_log import LOG_NAME, JsonlLogCallback, ZeroVarianceStop
from mmrag_rft.training.warmup import WARMUP_DIR

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    output_dir: str
    stage: int
    global_step: int
    adapter_dir: str | None  # final LoRA adapter (None for a full fine-tune)
    merged_dir: str  # a plain Hugging Face model folder: the `--init` of the next stage, or a backend's model
    log_path: str
    train_examples: int
    val_questions: int
    resumed_from: str | None = None
    warmup: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    stopped_early: str | None = None  # why training ended before max_steps / the epochs, if it did

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- models ---------------------------------------------------------------------------------------------------

def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# --- data -----------------------------------------------------------------------------------------------------

def load_split(cfg: TrainConfig) -> tuple[list[Any], list[Any]]:
    from mmrag_rft.data.loaders import load_samples

    if not cfg.data.path:
        raise ValueError("data.path is empty: name a WebQA/MMQA/JSONL file (e.g. --set data.path=...)")
    samples = []
    for s in load_samples(cfg.data.path, format=cfg.data.format):  # type: ignore[arg-type]
        samples.append(s)
        if cfg.data.limit is not None and len(samples) >= cfg.data.limit:
            break
    if not any(set(s.gold_ids) & {c.id for c in s.candidates} for s in samples):
        raise ValueError(f"data.path {cfg.data.path}: no question has its gold evidence among its own 'candidates'; "
                         "training pairs each question with its pool (gold and negatives), so each needs one "
                         "(docs/data-format.md)")
    return split_by_question(samples, cfg.data.val_fraction, cfg.data.split_seed)


def build_rows(cfg: TrainConfig, stage: int, samples: list[Any], *, with_pixels: bool,
               stage1_scores: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    d = cfg.data
    if stage == 1:
        return stage1_rows(samples, balance=d.balance, max_pairs_per_question=d.max_pairs_per_question,
                           with_pixels=with_pixels, max_chars=d.max_chars, seed=d.seed,
                           other_negatives=d.other_negatives, think=d.think, layout=d.layout,
                           modalities=d.modalities, label_swap=d.label_swap, clip_words=d.clip_words)
    order_fn = retrieval_order if d.negatives == "retrieval" else None
    return stage2_rows(samples, num_candidates=d.num_candidates, permutations=d.permutations, with_pixels=with_pixels,
                       max_chars=d.max_chars, seed=d.seed, stage1_scores=stage1_scores, order_fn=order_fn,
                       max_gold=d.max_gold, think=d.think)


def warmup_key(cfg: TrainConfig, stage: int, init_src: Any) -> dict[str, Any]:
    """What a saved format warm-up depends on: a rerun into the same folder reuses it only if all of it matches."""
    d, w = cfg.data, cfg.warmup
    return {"stage": stage, "model": str(init_src), "data": d.path, "limit": d.limit, "think": d.think,
            "num_candidates": d.num_candidates, "max_chars": d.max_chars, "split": [d.val_fraction, d.split_seed],
            "steps": w.steps, "learning_rate": w.learning_rate, "batch_size": w.batch_size, "seed": w.seed,
            "lora": [cfg.lora.r, cfg.lora.alpha, list(cfg.lora.target_modules)],
            # named only when not the default, so warm-ups saved before layouts existed still match
            **({"layout": d.layout} if d.layout != "default" else {}),
            **({"modalities": list(d.modalities)} if d.modalities is not None else {}),
            **({"label_swap": d.label_swap} if d.label_swap else {}),
            **({"clip_words": d.clip_words} if d.clip_words is not None else {}),
            **({"max_gold": d.max_gold} if d.max_gold is not None else {})}


# --- trainer --------------------------------------------------------------------------------------------------

# GRPOSection fields that are ours, not GRPOConfig's (every other field is passed through under its TRL name; a
# test checks the names against the installed TRL).
OUR_GRPO_FIELDS = ("share_prompt", "advantage_group")


def grpo_args(cfg: TrainConfig, output_dir: Path, reward_weights: list[float], shuffle: bool = True) -> Any:
    import dataclasses

    import torch
    from trl import GRPOConfig

    fields = {k: v for k, v in dataclasses.asdict(cfg.grpo).items() if k not in OUR_GRPO_FIELDS}
    return GRPOConfig(
        output_dir=str(output_dir), **fields, save_strategy="steps", reward_weights=reward_weights,
        use_cpu=not torch.cuda.is_available(), remove_unused_columns=False, disable_tqdm=False,
        shuffle_dataset=shuffle,
    )


def check_group_batch(cfg: TrainConfig, processes: int | None = None, stage: int = 1) -> None:
    """TRL generates whole groups: per-device batch x accumulation x processes must be a multiple of G; a balanced
    stage-2 step must hold whole questions (all their `permutations`), and a question-wide advantage needs them."""
    if processes is None:
        processes = process_state().num_processes
    g = cfg.grpo
    total = g.per_device_train_batch_size * g.gradient_accumulation_steps * processes
    if total % g.num_generations:
        raise ValueError(f"grpo.per_device_train_batch_size ({g.per_device_train_batch_size}) x "
                         f"gradient_accumulation_steps ({g.gradient_accumulation_steps}) x processes ({processes}) "
                         f"= {total} is not a multiple of grpo.num_generations ({g.num_generations})")
    perms = cfg.data.permutations
    if stage == 2 and cfg.data.balanced_steps and perms > 1 and (total // g.num_generations) % perms:
        raise ValueError(f"data.balanced_steps with data.permutations {perms}: a step holds {total // g.num_generations} "
                         f"prompts (per-device batch x accumulation x processes / grpo.num_generations), not a "
                         f"multiple of {perms}, so a question's orders would fall into different steps")
    if g.advantage_group == "question" and not (stage == 2 and cfg.data.balanced_steps and perms > 1):
        raise ValueError("grpo.advantage_group 'question' compares a completion with its question's other orders: it "
                         "needs stage 2 with data.balanced_steps: true and data.permutations of 2 or more (got stage "
                         f"{stage}, balanced_steps {cfg.data.balanced_steps}, permutations {perms})")


def train(config: TrainConfig, *, stage: int, init: str | None = None, resume: bool = False,
          overwrite: bool = False, stage1_scores: dict[str, dict[str, float]] | None = None,
          callbacks: list[Any] | None = None) -> RunResult:
    """Run one RL stage; `resume` continues from the last `checkpoint-*` in `config.output_dir`; a fresh run into a
    folder that holds one needs `overwrite` (the old run is moved aside, never mixed with the new one)."""
    cfg = config
    check_before_loading(cfg, stage)
    state = process_state()
    with state.main_process_first():  # the main process makes the folder (an old run moved aside), the others find it
        out, ckpt = (open_run_folder(cfg, resume=resume, overwrite=overwrite) if state.is_main_process
                     else found_run_folder(cfg, resume=resume))
    if ckpt is not None and (done := finished_run(out, ckpt, cfg)) is not None:
        return RunResult(**done)
    if state.is_main_process:
        dump(cfg, out / "config.yaml")
    from mmrag_rft.models.loading import is_vision_model, resolve_model_path

    init_src = resolve_model_path(init or cfg.model.path)
    is_vlm = is_vision_model(init_src)
    processing_class = load_policy_processor(init_src, cfg.model.max_pixels)
    train_samples, val_samples = write_split(cfg, out, write=state.is_main_process)

    model_src, warm_info = saved_warmup(cfg, stage, out, init_src, resume=resume)
    model = load_policy(model_src, cfg)
    if stage == 2 and stage1_scores is None:  # each process scores its share; cached in the run folder
        stage1_scores = stage2_negative_scores(cfg, train_samples, out, init_src=init_src,
                                               processing_class=processing_class,
                                               policy=model if model_src == init_src else None)
    rows = build_rows(cfg, stage, train_samples, with_pixels=is_vlm and cfg.model.use_pixels,
                      stage1_scores=stage1_scores)
    if cfg.warmup.enabled and warm_info is None:
        with state.main_process_first():  # the main process warms up; the others then read what it saved
            if state.is_main_process:
                warm_info = run_warmup(cfg, stage, out, model, processing_class, rows, init_src, is_vlm)
            else:
                _, warm_info = saved_warmup(cfg, stage, out, init_src, resume=True)
        model_src = out / WARMUP_DIR
        model = load_policy(model_src, cfg)

    balanced = cfg.data.balanced_steps  # after the warm-up, which samples rows of its own
    if balanced:
        rows = (interleave_by_label if stage == 1 else group_by_question)(rows, seed=cfg.data.seed)
    dataset = to_dataset(rows)
    trainer, guard = build_trainer(cfg, stage, out, add_lora(model, cfg, is_vlm), processing_class, dataset,
                                   shuffle=not balanced, callbacks=callbacks)
    trained, global_step, metrics = run_grpo(trainer, cfg, ckpt)
    merged, adapter_dir = save_model(trainer, trained, processing_class, out, lora=cfg.lora.enabled,
                                     base_src=model_src, cfg=cfg)

    res = RunResult(output_dir=str(out), stage=stage, global_step=global_step,
                    adapter_dir=str(adapter_dir) if adapter_dir else None, merged_dir=str(merged),
                    log_path=str(out / LOG_NAME), train_examples=len(rows), val_questions=len(val_samples),
                    resumed_from=str(ckpt) if ckpt else None, warmup=warm_info, metrics=metrics,
                    stopped_early=guard.reason if guard else None)
    if state.is_main_process:
        atomic_write_text(out / "result.json", json.dumps(res.to_dict(), indent=2, default=str))
    state.wait_for_everyone()
    return res


# --- the phases of `train` ----------------------------------------------------------------------------------------

def check_before_loading(cfg: TrainConfig, stage: int) -> None:
    """What can be refused before any model loads: the stage, the group batch, the rewards' names."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    from mmrag_rft.rewards import make_reward_funcs

    check_group_batch(cfg, stage=stage)
    make_reward_funcs(stage, cfg.rewards)
    _offline()


def open_run_folder(cfg: TrainConfig, *, resume: bool, overwrite: bool) -> tuple[Path, Path | None]:
    """The output folder (an old run moved aside on overwrite) and the checkpoint to resume from, whose config must
    match this one."""
    out = Path(cfg.output_dir)
    prepare_output(out, resume=resume, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = last_checkpoint(out) if resume else None
    if resume and ckpt is None and not (out / "config.yaml").is_file():
        raise FileNotFoundError(f"{out}: --resume given but no run to resume (no config.yaml, no checkpoint-*)")
    if resume:
        check_resume_config(out / "config.yaml", cfg)
    if resume and ckpt is None:  # stopped before its first checkpoint: step 0 again, its caches (scores, warm-up) kept
        log.warning("%s: no checkpoint yet; training starts at step 0, reusing what the run cached", out)
    return out, ckpt


def found_run_folder(cfg: TrainConfig, *, resume: bool) -> tuple[Path, Path | None]:
    """What a non-main process uses: the folder the main process has just prepared, and its checkpoint."""
    out = Path(cfg.output_dir)
    return out, last_checkpoint(out) if resume else None


def write_split(cfg: TrainConfig, out: Path, *, write: bool = True) -> tuple[list[Any], list[Any]]:
    train_samples, val_samples = load_split(cfg)
    if write:
        atomic_write_text(out / "split.json", json.dumps({"train": [s.qid for s in train_samples],
                                                          "val": [s.qid for s in val_samples]}))
    return train_samples, val_samples


def saved_warmup(cfg: TrainConfig, stage: int, out: Path, init_src: Path, *,
                 resume: bool) -> tuple[Path, dict[str, Any] | None]:
    """Where the policy starts: a format warm-up already on disk for this exact setup (or the resumed run's), else
    the init model."""
    warm_dir = out / WARMUP_DIR
    if not (cfg.warmup.enabled and (warm_dir / "config.json").is_file()):
        return init_src, None
    info = json.loads((warm_dir / "warmup.json").read_text()) if (warm_dir / "warmup.json").is_file() else {}
    if resume or info.get("key") == warmup_key(cfg, stage, init_src):
        return warm_dir, info
    log.warning("%s was warmed up for another model, data or warm-up setting: warming up again", warm_dir)
    return init_src, None


def run_warmup(cfg: TrainConfig, stage: int, out: Path, model: Any, processing_class: Any, rows: list[dict[str, Any]],
               init_src: Path, is_vlm: bool) -> dict[str, Any]:
    """Supervised steps on the format only (never gold labels), saved to the run's warm-up folder."""
    from mmrag_rft.training.warmup import format_warmup

    return format_warmup(model, processing_class, rows, stage=stage, cfg=cfg.warmup, lora=cfg.lora, is_vlm=is_vlm,
                         out_dir=out / WARMUP_DIR, key=warmup_key(cfg, stage, init_src))


def build_trainer(cfg: TrainConfig, stage: int, out: Path, model: Any, processing_class: Any, dataset: Any, *,
                  shuffle: bool, callbacks: list[Any] | None) -> tuple[Any, ZeroVarianceStop | None]:
    from mmrag_rft.rewards import make_reward_funcs
    from mmrag_rft.training.advantages import GroupedGRPOTrainer

    funcs, weights = make_reward_funcs(stage, cfg.rewards)
    guard = (ZeroVarianceStop(cfg.stop_after_zero_std_steps, cfg.stop_zero_std_mean)
             if cfg.stop_after_zero_std_steps else None)
    trainer = GroupedGRPOTrainer(model=model, reward_funcs=funcs, args=grpo_args(cfg, out, weights, shuffle=shuffle),
                                 train_dataset=dataset, processing_class=processing_class,
                                 share_prompt=cfg.grpo.share_prompt, advantage_group=cfg.grpo.advantage_group,
                                 callbacks=[JsonlLogCallback(out / LOG_NAME, stage=stage),
                                            *([guard] if guard else []), *(callbacks or [])])
    return trainer, guard


def run_grpo(trainer: Any, cfg: TrainConfig, ckpt: Path | None) -> tuple[Any, int, dict[str, Any]]:
    """GRPO from the start or the checkpoint: (trained model, global step, metrics)."""
    ckpt_step = checkpoint_step(ckpt) if ckpt else 0
    if ckpt is not None and 0 < cfg.grpo.max_steps <= ckpt_step:
        # killed after the last save but before the export: the Trainer would train one step past max_steps (it
        # checks only after a step), so the checkpoint's weights are exported as they are
        log.warning("%s is already at step %d (max_steps %d): exporting it without training", ckpt, ckpt_step,
                    cfg.grpo.max_steps)
        trained = load_checkpoint_weights(trainer.model, ckpt, cfg)
        metrics: dict[str, Any] = {"exported_from_checkpoint": str(ckpt)}
        global_step = ckpt_step
    else:
        result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        trained, metrics, global_step = trainer.model, dict(result.metrics), trainer.state.global_step
    metrics["share_prompt"] = trainer.share_prompt_off_reason or "on"
    metrics["shared_prompt_rows"] = dict(trainer.shared_prompt_stats)
    return trained, global_step, metrics


def save_model(trainer: Any, trained: Any, processing_class: Any, out: Path, *, lora: bool, base_src: Path,
               cfg: TrainConfig) -> tuple[Path, Path | None]:
    """adapter/ (the LoRA alone) and merged/ (a plain model folder: the next stage's --init, a backend's model),
    written by the main process. Under DeepSpeed ZeRO-3 every process holds a shard of each large weight: the
    weights are gathered first (every process takes part) and merged/ is the base model plus the saved adapter."""
    acc = trainer.accelerator
    adapter_dir = out / "adapter" if lora else None
    merged = out / "merged"
    if is_zero3(acc) and trainer.model_wrapped is not trainer.model:  # a DeepSpeed engine ran (not a bare export)
        state_dict = acc.get_state_dict(trainer.model_wrapped)  # needs zero3_save_16bit_model (configs/accelerate)
        if acc.is_main_process:
            if lora:
                from transformers.integrations.deepspeed import unset_hf_deepspeed_config

                from mmrag_rft.models.loading import merge_lora

                trained.save_pretrained(adapter_dir, state_dict=state_dict)  # PEFT keeps the adapter's own keys
                unset_hf_deepspeed_config()  # training is over: load the base whole, on this process alone
                trained = merge_lora(load_policy(base_src, cfg), adapter_dir)  # in the dtype it trained in
                trained.save_pretrained(merged)
            else:
                trained.save_pretrained(merged, state_dict=state_dict)
    elif acc.is_main_process:
        if lora:
            trained.save_pretrained(adapter_dir)
            trained = trained.merge_and_unload()
        trained.save_pretrained(merged)
    if acc.is_main_process:
        processing_class.save_pretrained(merged)
        if getattr(trained, "generation_config", None) is not None:
            trained.generation_config.save_pretrained(merged)
    acc.wait_for_everyone()
    return merged, adapter_dir
