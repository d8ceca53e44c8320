"""The policy GRPO trains and its processing class: both through `models.loading` (the one loader), the model in the
config's dtype and attention kernel, the processing class made to continue a prefilled assistant turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrag_rft.training.config import TrainConfig


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


def load_policy_processor(path: Path | str, max_pixels: int | None = None) -> Any:
    """The processing class GRPO trains with: the one loader's, made to continue the prefilled assistant turn."""
    from mmrag_rft.models.loading import load_processor

    return continue_final_assistant(load_processor(path, max_pixels=max_pixels))


def load_policy(src: str | Path, cfg: TrainConfig) -> Any:
    """The policy (init, warm-up or base of the adapter) as the config asks: its dtype and attention kernel."""
    from mmrag_rft.models.loading import load_model

    return load_model(src, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation)
