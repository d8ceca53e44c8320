"""LoRA for both stages: which modules get adapters (vision tower frozen, optionally only the top decoder layers)."""

from __future__ import annotations

from typing import Any

from mmrag_rft.training.config import TrainConfig

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
