"""`mmrag train ... --dry-run`: everything about a run that can be checked without a GPU or the weights.

It resolves the config, the accelerate / DeepSpeed file and the model's config (the model is built on the meta
device: no weights are read), checks the combinations that otherwise fail only after minutes of loading, and
prints the plan. Each problem is one line naming the keys at fault.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrag_rft.training.config import TrainConfig

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}
PATCH_PIXELS = 28 * 28  # Qwen2-VL / Qwen2.5-VL: 14 px patches merged 2 x 2 into one visual token


@dataclass
class DryRun:
    plan: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rewards: str = ""  # the reward functions and their weights, as the trainer will get them


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _trl_window(dist: str) -> Any:
    """The version range TRL declares for one of its extras' packages (e.g. vllm), as a SpecifierSet."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet()
    for r in importlib.metadata.requires("trl") or []:
        req = Requirement(r)
        if req.name == dist:
            spec &= req.specifier
    return spec


def read_accelerate_config(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"--accelerate-config {p}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--accelerate-config {p}: top level must be a mapping")
    return data


def _meta_model(config: Any) -> Any:
    """The model's modules and parameter shapes on the meta device: no memory, no weights."""
    import torch

    from mmrag_rft.models.loading import model_class

    with torch.device("meta"):
        return model_class(config).from_config(config)


def dry_run(cfg: TrainConfig, *, stage: int, accelerate_config: str | Path | None = None,
            num_processes: int | None = None, init: str | None = None) -> DryRun:
    from mmrag_rft.models.hf import is_vision_config
    from mmrag_rft.models.loading import model_config, resolve_model_path
    from mmrag_rft.training.shared_prompt import trl_version_problem

    r = DryRun()
    g, acc = cfg.grpo, read_accelerate_config(accelerate_config)
    procs = num_processes or int(acc.get("num_processes") or 1)
    zero = int((acc.get("deepspeed_config") or {}).get("zero_stage") or 0) if acc.get("distributed_type") == \
        "DEEPSPEED" else 0

    # -- software ------------------------------------------------------------------------------------------
    versions = {d: _installed(d) for d in ("torch", "transformers", "trl", "peft", "accelerate", "vllm",
                                           "deepspeed")}
    if g.use_vllm:
        window = _trl_window("vllm")
        if versions["vllm"] is None:
            r.problems.append("grpo.use_vllm: true but vLLM is not installed (pip install 'mmrag-rft[gpu]', or set "
                              "grpo.use_vllm=false)")
        elif versions["vllm"] not in window:
            r.problems.append(f"vLLM {versions['vllm']} is outside the range TRL {versions['trl']} accepts "
                              f"({window})")
    if zero:
        window = _trl_window("deepspeed")
        if versions["deepspeed"] is None:
            r.problems.append(f"{accelerate_config}: DeepSpeed ZeRO-{zero} but deepspeed is not installed")
        elif window and versions["deepspeed"] not in window:
            r.problems.append(f"DeepSpeed {versions['deepspeed']} is outside the range TRL accepts ({window})")
    if zero == 3 and not (acc.get("deepspeed_config") or {}).get("zero3_save_16bit_model"):
        r.problems.append(f"{accelerate_config}: ZeRO-3 without zero3_save_16bit_model: true, so the trained weights "
                          "cannot be gathered to be saved at the end")
    if g.share_prompt and (off := trl_version_problem()):
        r.notes.append(f"grpo.share_prompt will switch itself off: {off}")
    if g.bf16 and acc.get("mixed_precision") not in (None, "bf16"):
        r.problems.append(f"grpo.bf16: true but {accelerate_config} sets mixed_precision "
                          f"{acc.get('mixed_precision')!r}")

    # -- batch arithmetic (TRL: the generation batch must hold whole groups) ---------------------------------
    from mmrag_rft.training.grpo import check_group_batch

    global_batch = g.per_device_train_batch_size * g.gradient_accumulation_steps * procs
    try:
        check_group_batch(cfg, procs, stage=stage)
    except ValueError as e:
        r.problems.append(str(e))
    if g.use_vllm and g.vllm_mode == "colocate" and procs > 1 and g.vllm_gpu_memory_utilization > 0.9:
        r.problems.append("grpo.vllm_gpu_memory_utilization leaves no room for training in colocate mode")

    from mmrag_rft.rewards import make_reward_funcs

    try:
        funcs, weights = make_reward_funcs(stage, cfg.rewards)
        r.rewards = ", ".join(f"{getattr(f, '__name__', f)} x {w:g}" for f, w in zip(funcs, weights))
    except ValueError as e:
        r.problems.append(str(e))

    # -- the data: every question is read, each needs its gold among its own candidates ----------------------
    from mmrag_rft.training.grpo import load_split

    if not cfg.data.path:
        r.notes.append("data.path is empty: the data is not checked; name it (--set data.path=...) before training")
    else:
        try:
            load_split(cfg)
        except (ValueError, OSError) as e:  # DataError is a ValueError
            r.problems.append(str(e))

    # -- the model, without its weights --------------------------------------------------------------------
    spec = init or cfg.model.path
    try:
        folder = resolve_model_path(spec)  # an adapter: its merged folder (cached after the first time)
        mcfg = model_config(folder)
    except (FileNotFoundError, ValueError, OSError) as e:
        r.problems.append(f"model.path {spec!r}: {e}")
        return _finish(r, cfg, stage, procs, zero, global_batch, versions, None, None)
    model = _meta_model(mcfg)
    vision = is_vision_config(mcfg)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    lm_names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if "visual" not in n and "vision" not in n}
    if cfg.lora.enabled:
        missing = [t for t in cfg.lora.target_modules if t not in (lm_names if cfg.lora.freeze_vision else names)]
        if missing:
            r.problems.append(f"lora.target_modules {missing} are not modules of {type(model).__name__}"
                              f"{' (outside the vision tower)' if cfg.lora.freeze_vision else ''}")
        text_cfg = getattr(mcfg, "text_config", mcfg)
        layers = getattr(text_cfg, "num_hidden_layers", None)
        if cfg.lora.top_layers and layers and cfg.lora.top_layers > layers:
            r.problems.append(f"lora.top_layers {cfg.lora.top_layers} > the model's {layers} layers")
    text_cfg = getattr(mcfg, "text_config", mcfg)
    context = int(getattr(text_cfg, "max_position_embeddings", 0) or 0)
    images = (1 if stage == 1 else cfg.data.num_candidates) if vision and cfg.model.use_pixels else 0
    if vision and cfg.model.use_pixels and cfg.model.max_pixels:
        image_tokens = images * math.ceil(cfg.model.max_pixels / PATCH_PIXELS)
    else:
        image_tokens = 0
    text_tokens = (1 if stage == 1 else cfg.data.num_candidates) * cfg.data.max_chars // 3 + 200
    need = image_tokens + text_tokens + g.max_completion_length
    if context and need > context:
        r.problems.append(f"a prompt may need ~{need} tokens ({images} image(s) at model.max_pixels "
                          f"{cfg.model.max_pixels} -> {image_tokens}, text ~{text_tokens}, completion "
                          f"{g.max_completion_length}) but the model's context is {context}: lower model.max_pixels, "
                          "data.num_candidates or data.max_chars")
    if vision and cfg.model.use_pixels and not cfg.model.max_pixels:
        r.notes.append("model.max_pixels is null: the processor's own cap applies (Qwen2-VL: 12.8M pixels, "
                       "~16k tokens per image)")
    params = sum(p.numel() for p in model.parameters())
    return _finish(r, cfg, stage, procs, zero, global_batch, versions, params,
                   {"model_class": type(model).__name__, "vision": vision, "context": context,
                    "prompt_tokens_max": need})


def _finish(r: DryRun, cfg: TrainConfig, stage: int, procs: int, zero: int, global_batch: int,
            versions: dict[str, Any], params: int | None, model_info: dict[str, Any] | None) -> DryRun:
    g = cfg.grpo
    steps = g.max_steps if g.max_steps > 0 else f"{g.num_train_epochs} epoch(s) over the training prompts"
    mem: dict[str, Any] = {}
    if params is not None:
        b = BYTES.get(cfg.model.dtype, 4)
        weights = params * b / (procs if zero == 3 else 1)
        trainable = (params * 0.02 if cfg.lora.enabled else params)  # LoRA r<=64 on 7 projections: ~1-2%
        optim = trainable * (4 + 4 + 4) / (procs if zero >= 2 else 1)  # fp32 master copy + Adam's two moments
        ref = weights if g.beta > 0 and not cfg.lora.enabled else 0  # LoRA: the reference is the adapter-off model
        mem = {"weights_gb": round(weights / 1e9, 2), "optimizer_gb": round(optim / 1e9, 2),
               "reference_gb": round(ref / 1e9, 2),
               "total_gb_before_activations": round((weights + optim + ref) / 1e9, 2),
               **({"vllm_share_of_gpu": g.vllm_gpu_memory_utilization} if g.use_vllm else {})}
    r.plan = {"stage": stage, "model": cfg.model.path, **(model_info or {}),
              "parameters": params, "dtype": cfg.model.dtype, "processes": procs,
              "deepspeed_zero": zero or None, "global_batch_completions": global_batch,
              "prompts_per_step": global_batch // max(1, g.num_generations), "num_generations": g.num_generations,
              "steps": steps, "generation": "vLLM " + g.vllm_mode if g.use_vllm else "transformers generate",
              "lora": f"r {cfg.lora.r} on {', '.join(cfg.lora.target_modules)}" if cfg.lora.enabled else "off",
              "rewards": r.rewards,
              "memory_per_device_estimate": mem, "versions": versions}
    return r
