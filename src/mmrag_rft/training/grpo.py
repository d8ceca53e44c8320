"""Both RL stages on TRL's GRPOTrainer: data -> model (+LoRA) -> optional format warm-up -> GRPO -> adapter + merged.

Stage 2 starts from stage 1 by *merging*: `--init` names the stage-1 run (or its `merged/` folder); the stage-1
LoRA is already folded into those weights, and stage 2 adds a fresh LoRA on top. The merged stage-1 model is
also the KL reference of stage 2 (TRL uses the adapter-disabled model as reference when beta > 0).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmrag_rft.config import atomic_write_text, dump
from mmrag_rft.training.config import TrainConfig
from mmrag_rft.training.examples import interleave_by_label, split_by_question, stage1_rows, stage2_rows, to_dataset
from mmrag_rft.training.run_log import JsonlLogCallback, ZeroVarianceStop

log = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"


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


# --- the prefill: TRL 1.16 renders prompts with add_generation_prompt=True -----------------------------------------

def continue_final_assistant(processing_class: Any) -> Any:
    """Make `apply_chat_template` *continue* a trailing assistant message instead of closing it.

    TRL 1.16's GRPOTrainer calls `apply_chat_template(..., add_generation_prompt=True)` unconditionally
    (grpo_trainer.py, `_tokenize_prompts`), which renders our prefill as a finished assistant turn followed by a
    new empty one; `chat_template_kwargs` cannot help because transformers refuses continue_final_message together
    with add_generation_prompt. This instance-level wrapper is the smallest fix: for conversations that end with
    an assistant message it swaps add_generation_prompt for continue_final_message.
    """
    if getattr(processing_class, "_mmrag_continue_final", False):
        return processing_class
    original = processing_class.apply_chat_template

    def apply_chat_template(conversation: Any, *args: Any, **kwargs: Any) -> Any:
        convs = conversation if (conversation and isinstance(conversation[0], (list, tuple))) else [conversation]
        if convs and all(c and c[-1].get("role") == "assistant" for c in convs) and kwargs.get("add_generation_prompt"):
            kwargs["add_generation_prompt"] = False
            kwargs["continue_final_message"] = True
        return original(conversation, *args, **kwargs)

    processing_class.apply_chat_template = apply_chat_template
    processing_class._mmrag_continue_final = True
    return processing_class


# --- models ---------------------------------------------------------------------------------------------------

def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve_model(spec: str) -> Path:
    """A model spec (`models.loading`: default, base, tiny-*, folder, run, adapter, hub id) -> a full model folder."""
    from mmrag_rft.models.loading import resolve_model_path

    return resolve_model_path(spec)


def _is_vlm_dir(path: Path | str) -> bool:
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return "vision_config" in cfg


def load_processor(path: Path | str, is_vlm: bool, max_pixels: int | None = None) -> Any:
    if is_vlm:
        try:  # the project's torchvision-free Qwen2-VL processor
            from transformers import AutoConfig

            from mmrag_rft.models.hf import load_vl_processor

            proc = load_vl_processor(Path(path), AutoConfig.from_pretrained(str(path)))
        except ImportError:
            from transformers import AutoProcessor

            proc = AutoProcessor.from_pretrained(path, **({"max_pixels": max_pixels} if max_pixels else {}))
        if max_pixels and hasattr(getattr(proc, "image_processor", None), "max_pixels"):
            proc.image_processor.max_pixels = max_pixels
        tok = proc.tokenizer
    else:
        from transformers import AutoTokenizer

        proc = tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return continue_final_assistant(proc)


def load_model(path: Path | str, is_vlm: bool, dtype: str = "float32", attn_implementation: str | None = None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    kw: dict[str, Any] = {"dtype": "auto" if dtype == "auto" else getattr(torch, dtype)}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    cls = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    return cls.from_pretrained(path, **kw)


VISION_PATTERNS = ("visual", "vision_tower", "vision_model", "image_encoder", "multi_modal_projector")


def lora_target(cfg_modules: list[str], is_vlm: bool, freeze_vision: bool,
                layers: list[int] | None = None) -> Any:
    """Target module names; a regex when the vision tower is frozen or only some decoder layers are adapted."""
    if not (is_vlm and freeze_vision) and layers is None:
        return list(cfg_modules)
    names = "|".join(cfg_modules)
    skip = rf"(?!.*({'|'.join(VISION_PATTERNS)}))" if is_vlm and freeze_vision else ""
    where = rf".*\.layers\.({'|'.join(str(i) for i in layers)})\..*" if layers is not None else ".*"
    return rf"^{skip}{where}\.({names})$"


def text_layer_count(model: Any) -> int:
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    return int(cfg.num_hidden_layers)


def adapted_layers(model: Any, top: int | None) -> list[int] | None:
    if top is None:
        return None
    n = text_layer_count(model)
    if not 1 <= top <= n:
        raise ValueError(f"lora.top_layers={top}: the model has {n} decoder layers (give 1..{n} or null)")
    return list(range(n - top, n))


def add_lora(model: Any, cfg: TrainConfig, is_vlm: bool) -> Any:
    if not cfg.lora.enabled:
        if is_vlm and cfg.lora.freeze_vision:
            for n, p in model.named_parameters():
                if any(v in n for v in VISION_PATTERNS):
                    p.requires_grad_(False)
        return model
    from peft import LoraConfig, get_peft_model

    lc = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=lora_target(cfg.lora.target_modules, is_vlm, cfg.lora.freeze_vision,
                                               adapted_layers(model, cfg.lora.top_layers)),
                    task_type="CAUSAL_LM", bias="none")
    if cfg.grpo.gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, lc)


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
    return split_by_question(samples, cfg.data.val_fraction, cfg.data.split_seed)


def stage1_scores_with_model(get_model: Callable[[], Any], processing_class: Any, samples: list[Any], *,
                             cache: Path | None = None, model_key: str = "",
                             layout: str = "default") -> dict[str, dict[str, float]]:
    """P(yes) of every candidate (score-style stage-1 prompt, captions only): orders stage 2's negatives.

    `layout` is the stage-1 prompt layout the scoring model was trained with (stage 2's `data.layout`).

    The scores go to `cache` as they are computed (JSON, atomic, keyed by `model_key`), so a resumed or
    re-run stage 2 does not score the whole training set again. `get_model` is called (to load the model)
    only if some question is not in the cache yet.
    """
    from rich.progress import Progress

    from mmrag_rft.models.hf import HFBackend
    from mmrag_rft.prompts import stage1_prompt

    scores: dict[str, dict[str, float]] = {}
    if cache is not None and cache.is_file():
        try:
            saved = json.loads(cache.read_text())
        except ValueError:
            log.warning("%s is not valid JSON: stage-1 scores are computed again", cache)
            saved = {}
        if saved.get("model") == model_key:
            scores = saved.get("scores", {})

    def save() -> None:
        if cache is not None:
            atomic_write_text(cache, json.dumps({"model": model_key, "scores": scores}))

    todo = [s for s in samples if s.qid not in scores]
    if not todo:
        return {s.qid: scores[s.qid] for s in samples}
    model = get_model()
    backend = HFBackend(model, processor=processing_class, device=str(model.device), dtype="auto")
    with Progress(transient=True) as prog:
        task = prog.add_task(f"stage-1 P(yes) for stage-2 negatives ({len(scores)} cached)", total=len(todo))
        for i, s in enumerate(todo, 1):
            p = backend.score_yes_no([stage1_prompt(s.question, c, style="score", layout=layout) for c in s.candidates])
            scores[s.qid] = {c.id: float(x) for c, x in zip(s.candidates, p)}
            prog.advance(task)
            if i % 25 == 0:
                save()
    save()
    return {s.qid: scores[s.qid] for s in samples}


def negatives_from_model(cfg: TrainConfig, samples: list[Any], out: Path) -> dict[str, dict[str, float]]:
    """Stage-1 P(yes) from `data.negatives_model` (its own tokenizer and the prompt layout its manifest names),
    for a stage-2 policy that is another model: only the tokenizer loads unless the cache lacks scores."""
    from transformers import AutoTokenizer

    from mmrag_rft.models.loading import load_for_training, model_settings, resolve_model_path

    spec = cfg.data.negatives_model
    layout = (model_settings(spec).get("prompt") or {}).get("layout") or cfg.data.layout
    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(spec)), padding_side="left")
    return stage1_scores_with_model(lambda: load_for_training(spec, dtype=cfg.model.dtype)[0], tok, samples,
                                    cache=out / "stage1_scores.json", model_key=f"{spec}|layout={layout}",
                                    layout=layout)


def retrieval_order(sample: Any) -> list[str]:
    from mmrag_rft.retrieval.index import rank_pool

    return [h.id for h in rank_pool(sample.question, sample.candidates, top_n=len(sample.candidates))]


def build_rows(cfg: TrainConfig, stage: int, samples: list[Any], *, with_pixels: bool,
               stage1_scores: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    d = cfg.data
    if stage == 1:
        return stage1_rows(samples, balance=d.balance, max_pairs_per_question=d.max_pairs_per_question,
                           with_pixels=with_pixels, max_chars=d.max_chars, seed=d.seed,
                           other_negatives=d.other_negatives, think=d.think, layout=d.layout)
    order_fn = retrieval_order if d.negatives == "retrieval" else None
    return stage2_rows(samples, num_candidates=d.num_candidates, permutations=d.permutations, with_pixels=with_pixels,
                       max_chars=d.max_chars, seed=d.seed, stage1_scores=stage1_scores, order_fn=order_fn)


def warmup_key(cfg: TrainConfig, stage: int, init_src: Any) -> dict[str, Any]:
    """What a saved format warm-up depends on: a rerun into the same folder reuses it only if all of it matches."""
    d, w = cfg.data, cfg.warmup
    return {"stage": stage, "model": str(init_src), "data": d.path, "limit": d.limit, "think": d.think,
            "num_candidates": d.num_candidates, "max_chars": d.max_chars, "split": [d.val_fraction, d.split_seed],
            "steps": w.steps, "learning_rate": w.learning_rate, "batch_size": w.batch_size, "seed": w.seed,
            "lora": [cfg.lora.r, cfg.lora.alpha, list(cfg.lora.target_modules)],
            # named only when not the default, so warm-ups saved before layouts existed still match
            **({"layout": d.layout} if d.layout != "default" else {})}


# --- trainer --------------------------------------------------------------------------------------------------

# GRPOSection fields that are ours, not GRPOConfig's (every other field is passed through under its TRL name; a
# test checks the names against the installed TRL).
OUR_GRPO_FIELDS = ("share_prompt",)


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


def _finished_run(out: Path, ckpt: Path, cfg: TrainConfig) -> RunResult | None:
    """The saved result when `--resume` finds the run already done (last checkpoint at max_steps, model exported).

    The Trainer checks max_steps only after a step, so resuming a finished run would train one step past it and
    overwrite the exported model; a finished run is returned as it is instead.
    """
    if cfg.grpo.max_steps <= 0 or not (out / "result.json").is_file() or not (out / "merged/config.json").is_file():
        return None
    try:
        step = _checkpoint_step(ckpt)
        saved = RunResult(**json.loads((out / "result.json").read_text()))
    except (ValueError, KeyError, TypeError):
        return None
    if step < cfg.grpo.max_steps or saved.global_step != step:
        return None
    log.warning("%s already finished at step %d (max_steps %d): nothing to resume; raise grpo.max_steps to train "
                "further", out, step, cfg.grpo.max_steps)
    return saved


def _checkpoint_step(ckpt: Path) -> int:
    return int(json.loads((ckpt / "trainer_state.json").read_text())["global_step"])


def _load_checkpoint_weights(model: Any, ckpt: Path, cfg: TrainConfig, is_vlm: bool) -> Any:
    """The trained weights of a checkpoint, on the model as `train` built it (LoRA adapter or full weights)."""
    if cfg.lora.enabled:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(model, load_peft_weights(str(ckpt)))
        return model
    return load_model(ckpt, is_vlm, cfg.model.dtype, cfg.model.attn_implementation)


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


def check_group_batch(cfg: TrainConfig, processes: int | None = None) -> None:
    """TRL generates whole groups: per-device batch x accumulation x processes must be a multiple of G."""
    if processes is None:
        from accelerate import PartialState

        processes = PartialState().num_processes
    g = cfg.grpo
    total = g.per_device_train_batch_size * g.gradient_accumulation_steps * processes
    if total % g.num_generations:
        raise ValueError(f"grpo.per_device_train_batch_size ({g.per_device_train_batch_size}) x "
                         f"gradient_accumulation_steps ({g.gradient_accumulation_steps}) x processes ({processes}) "
                         f"= {total} is not a multiple of grpo.num_generations ({g.num_generations})")


def train(config: TrainConfig, *, stage: int, init: str | None = None, resume: bool = False,
          overwrite: bool = False, stage1_scores: dict[str, dict[str, float]] | None = None,
          callbacks: list[Any] | None = None) -> RunResult:
    """Run one RL stage; `resume` continues from the last `checkpoint-*` in `config.output_dir`; a fresh run into a
    folder that holds one needs `overwrite` (the old run is moved aside, never mixed with the new one)."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    from mmrag_rft.rewards import make_reward_funcs

    check_group_batch(config)
    make_reward_funcs(stage, config.rewards)  # a misnamed reward fails here, before any model loads
    _offline()
    from mmrag_rft.training.shared_prompt import SharedPromptGRPOTrainer
    from mmrag_rft.training.warmup import WARMUP_DIR, format_warmup

    cfg = config
    out = Path(cfg.output_dir)
    prepare_output(out, resume=resume, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = last_checkpoint(out) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"{out}: --resume given but no checkpoint-* folder to resume from")
    if resume:
        check_resume_config(out / "config.yaml", cfg)
    if ckpt is not None and (done := _finished_run(out, ckpt, cfg)) is not None:
        return done
    dump(cfg, out / "config.yaml")

    src = resolve_model(init) if init else resolve_model(cfg.model.path)
    is_vlm = _is_vlm_dir(src)
    processing_class = load_processor(src, is_vlm, cfg.model.max_pixels)
    with_pixels = is_vlm and cfg.model.use_pixels

    train_samples, val_samples = load_split(cfg)
    atomic_write_text(out / "split.json", json.dumps({"train": [s.qid for s in train_samples],
                                                      "val": [s.qid for s in val_samples]}))

    init_src = src
    warm_dir = out / WARMUP_DIR
    warm_info = None
    key = warmup_key(cfg, stage, init_src)
    if cfg.warmup.enabled and (warm_dir / "config.json").is_file():
        info = json.loads((warm_dir / "warmup.json").read_text()) if (warm_dir / "warmup.json").is_file() else {}
        if resume or info.get("key") == key:
            src = warm_dir  # resumed run (or a rerun of the same setup): the warmed-up base is already on disk
            warm_info = info
        else:
            log.warning("%s was warmed up for another model, data or warm-up setting: warming up again", warm_dir)
    model = load_model(src, is_vlm, cfg.model.dtype, cfg.model.attn_implementation)

    if stage == 2 and cfg.data.negatives == "stage1" and stage1_scores is None and cfg.data.negatives_model:
        stage1_scores = negatives_from_model(cfg, train_samples, out)
    elif stage == 2 and cfg.data.negatives == "stage1" and stage1_scores is None:
        # negatives are ordered by the --init model itself, never by its format-warmed-up copy (a resumed run
        # loads the latter; the init model is reloaded only if the cache lacks scores)
        scorer = (lambda: model) if src == init_src else (
            lambda: load_model(init_src, is_vlm, cfg.model.dtype, cfg.model.attn_implementation))
        layout = cfg.data.layout  # the stage-1 model's prompt layout; named in the cache key only when not default
        scores_key = str(init_src) if layout == "default" else f"{init_src}|layout={layout}"
        stage1_scores = stage1_scores_with_model(scorer, processing_class, train_samples,
                                                 cache=out / "stage1_scores.json", model_key=scores_key, layout=layout)
    rows = build_rows(cfg, stage, train_samples, with_pixels=with_pixels, stage1_scores=stage1_scores)
    dataset = to_dataset(rows)

    if cfg.warmup.enabled and warm_info is None:
        warm_info = format_warmup(model, processing_class, rows, stage=stage, cfg=cfg.warmup, lora=cfg.lora,
                                  is_vlm=is_vlm, out_dir=warm_dir, key=key)
        model = load_model(warm_dir, is_vlm, cfg.model.dtype, cfg.model.attn_implementation)

    balanced = stage == 1 and cfg.data.balanced_steps
    if balanced:  # after the warm-up, which samples rows of its own: its saved copy stays valid either way
        dataset = to_dataset(interleave_by_label(rows, seed=cfg.data.seed))

    model = add_lora(model, cfg, is_vlm)
    funcs, weights = make_reward_funcs(stage, cfg.rewards)
    args = grpo_args(cfg, out, weights, shuffle=not balanced)
    log_cb = JsonlLogCallback(out / LOG_NAME, stage=stage)
    guard = (ZeroVarianceStop(cfg.stop_after_zero_std_steps, cfg.stop_zero_std_mean)
             if cfg.stop_after_zero_std_steps else None)
    trainer = SharedPromptGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                                      processing_class=processing_class, share_prompt=cfg.grpo.share_prompt,
                                      callbacks=[log_cb, *([guard] if guard else []), *(callbacks or [])])
    ckpt_step = _checkpoint_step(ckpt) if ckpt else 0
    if ckpt is not None and 0 < cfg.grpo.max_steps <= ckpt_step:
        # killed after the last save but before the export below: the Trainer would train one step past
        # max_steps (it checks only after a step), so export the checkpoint's weights as they are
        log.warning("%s is already at step %d (max_steps %d): exporting it without training", ckpt, ckpt_step,
                    cfg.grpo.max_steps)
        trained = _load_checkpoint_weights(trainer.model, ckpt, cfg, is_vlm)
        metrics: dict[str, Any] = {"exported_from_checkpoint": str(ckpt)}
        global_step = ckpt_step
    else:
        result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        trained = trainer.model
        metrics = dict(result.metrics)
        global_step = trainer.state.global_step
    metrics["share_prompt"] = trainer.share_prompt_off_reason or "on"
    metrics["shared_prompt_rows"] = dict(trainer.shared_prompt_stats)

    adapter_dir = None
    if cfg.lora.enabled:
        adapter_dir = out / "adapter"
        trained.save_pretrained(adapter_dir)
        trained = trained.merge_and_unload()
    merged = out / "merged"
    trained.save_pretrained(merged)
    processing_class.save_pretrained(merged)
    if getattr(trained, "generation_config", None) is not None:
        trained.generation_config.save_pretrained(merged)

    res = RunResult(output_dir=str(out), stage=stage, global_step=global_step,
                    adapter_dir=str(adapter_dir) if adapter_dir else None, merged_dir=str(merged),
                    log_path=str(out / LOG_NAME), train_examples=len(rows), val_questions=len(val_samples),
                    resumed_from=str(ckpt) if ckpt else None, warmup=warm_info, metrics=metrics,
                    stopped_early=guard.reason if guard else None)
    atomic_write_text(out / "result.json", json.dumps(res.to_dict(), indent=2, default=str))
    return res
