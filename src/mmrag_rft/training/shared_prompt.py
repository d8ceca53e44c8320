"""GRPO with the group's prompt run once: the `num_generations` completions of one prompt share its forward pass.

TRL repeats every prompt once per completion, so each step runs the same prompt `num_generations` times through the
policy for generation, for the reference (KL) log-probs and for the loss forward and backward. Our stage-1 prompts
are ~300 tokens for a 5-token verdict, so nearly all of a step is those copies. Here the unique prompts go through
the model once, their KV cache is expanded to every completion row (`index_select`, so gradients from all the
group's completions sum into the one prompt pass), and only the completion tokens run per row.

The result is the same computation as TRL's up to float rounding: the same positions (TRL's training forward
numbers left padding too; `generate` does not, and neither does our generation prefill), the same masks, the same
fused log-prob head. One difference: LoRA dropout on the prompt tokens is drawn once per group instead of once per
completion row. The shared path is used only where it is exact and safe: text-only models (the M-RoPE positions of
vision-language models come from the whole sequence), no gradient checkpointing (no cache is kept
under it), no vLLM generation, and a model that is not sharded by FSDP or DeepSpeed ZeRO-3 (submodules are called
directly). Everything else falls back to TRL's own code.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any

import torch
from trl import GRPOTrainer

from mmrag_rft.models.hf import MIN_SHARED_PREFIX, cache_kwarg
from mmrag_rft.training.processes import is_zero3

log = logging.getLogger(__name__)

# Keyword arguments that carry images or other per-row model inputs the two-part forward does not split.
_MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "spatial_shapes", "num_tiles",
                    "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of each distinct row's first occurrence, for every row the index of its distinct row)."""
    uniq, inverse = torch.unique(rows, dim=0, return_inverse=True)
    first = torch.full((uniq.size(0),), rows.size(0), dtype=torch.long, device=rows.device)
    first.scatter_reduce_(0, inverse, torch.arange(rows.size(0), device=rows.device), reduce="amin")
    # keep the distinct rows in batch order (torch.unique sorts them); remap the inverse to that order
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=rows.device)
    return first[order], rank[inverse]


def causal_lm(model: Any) -> Any:
    """The Hugging Face causal LM under a PEFT wrapper (LoRA layers are injected in place, so they run)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def prefill_shared(lm: Any, ids: torch.Tensor, mask: torch.Tensor, *, key: str,
                   generation_positions: bool) -> tuple[Any, torch.Tensor]:
    """Run each distinct row of (ids, mask) once through the backbone; return its cache expanded to every row.

    `key`: the backbone's cache argument (`cache_kwarg`).
    `generation_positions`: number positions as `generate` does (padding skipped); otherwise as a plain forward
    does (0..L-1), which is what TRL's log-prob pass uses.
    """
    from transformers import DynamicCache

    first, inverse = unique_rows(torch.cat([ids, mask.to(ids.dtype)], dim=1))
    kw: dict[str, Any] = {}
    if generation_positions:
        m = mask[first].long()
        kw["position_ids"] = (m.cumsum(-1) - 1).masked_fill(m == 0, 0)
    cache = DynamicCache(config=lm.config)
    lm.base_model(input_ids=ids[first], attention_mask=mask[first], use_cache=True, **{key: cache}, **kw)
    cache.batch_select_indices(inverse)
    return cache, first


# The TRL releases whose private `_get_per_token_logps_and_entropies` / `_generate` this file overrides were read
# and tested; outside them sharing switches itself off (TRL's own passes run) instead of guessing.
TESTED_TRL = ("1.16.0", "1.17.0")  # [lowest, below this]


def trl_version_problem() -> str | None:
    """Why prompt sharing cannot trust the installed TRL, or None."""
    import importlib.metadata

    from packaging.version import Version

    have = Version(importlib.metadata.version("trl"))
    low, high = (Version(v) for v in TESTED_TRL)
    if not low <= have < high:
        return f"TRL {have} is outside the releases it was written against ({TESTED_TRL[0]} <= TRL < {TESTED_TRL[1]})"
    return None


def _has_imageless_chunk(mm: dict[str, Any], rows: int, batch_size: int) -> bool:
    """Qwen-style inputs (pixel rows per image_grid_thw entry) where some log-prob chunk holds no image: TRL 1.16
    passes that chunk an empty pixel tensor, and the vision tower fails on it (text candidates beside images)."""
    n = mm.get("num_images")
    if mm.get("image_grid_thw") is None or mm.get("pixel_values") is None or not n:
        return False
    return any(sum(n[s:s + batch_size]) == 0 for s in range(0, rows, batch_size))


class SharedPromptGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with the prompt pass shared by the completions of a group (see the module docstring)."""

    def _logps_chunk_by_chunk(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                              logits_to_keep: int, batch_size: int, compute_entropy: bool, compute_aux_loss: bool,
                              mm: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """TRL's own pass, one chunk at a time, with the image inputs dropped from chunks that have none."""
        n = list(mm["num_images"])
        grid, pixels = mm["image_grid_thw"], mm["pixel_values"]
        img_cum = [0]
        for k in n:
            img_cum.append(img_cum[-1] + k)
        pix_cum = [0] + grid.prod(dim=-1).cumsum(0).tolist()
        logps, ents, aux = [], [], []
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            i0, i1 = img_cum[start], img_cum[end]
            sub = {k: (v[start:end] if isinstance(v, torch.Tensor) and k in ("token_type_ids", "mm_token_type_ids")
                       else v) for k, v in mm.items() if k not in ("pixel_values", "image_grid_thw", "num_images")}
            if i1 > i0:
                sub.update(pixel_values=pixels[pix_cum[i0]:pix_cum[i1]], image_grid_thw=grid[i0:i1],
                           num_images=n[start:end])
            lp, ent, ax = super()._get_per_token_logps_and_entropies(
                model, input_ids[start:end], attention_mask[start:end], logits_to_keep, batch_size=end - start,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **sub)
            logps.append(lp)
            if ent is not None:
                ents.append(ent)
            if ax is not None:
                aux.append(ax)
        return (torch.cat(logps, dim=0), torch.cat(ents, dim=0) if ents else None,
                torch.stack(aux).mean() if aux else None)

    def __init__(self, *args: Any, share_prompt: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reason = self._shared_prompt_unsupported() if share_prompt else "switched off (grpo.share_prompt: false)"
        self.share_prompt = reason is None
        self.share_prompt_off_reason = reason
        self.shared_prompt_stats = {"logprob_rows": 0, "logprob_prompt_rows": 0, "generate_rows": 0,
                                    "generate_prompt_rows": 0}
        log.info("GRPO prompt sharing %s", f"off: {reason}" if reason else "on")

    def _shared_prompt_unsupported(self) -> str | None:
        off = trl_version_problem()
        if off:
            return off
        acc = self.accelerator
        if getattr(self, "use_vllm", False):
            return "vLLM generation"
        if getattr(acc, "is_fsdp2", False) or getattr(acc.state, "fsdp_plugin", None) is not None:
            return "FSDP shards the model"
        if is_zero3(acc):
            return "DeepSpeed ZeRO-3 shards the model"
        if self.args.gradient_checkpointing:
            return "gradient checkpointing keeps no cache"
        lm = causal_lm(acc.unwrap_model(self.model))
        if getattr(lm.config, "vision_config", None) is not None:
            return "vision-language model (its M-RoPE positions are computed over the whole sequence)"
        if not hasattr(lm, "base_model") or lm.base_model is lm:
            return f"{type(lm).__name__} has no separate backbone"
        return None

    # -- log-probs (reference, old policy and the loss forward) --------------------------------------------------
    def _get_per_token_logps_and_entropies(
            self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
            batch_size: int | None = None, compute_entropy: bool = False, compute_aux_loss: bool = False,
            **mm: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        plain = (not self.share_prompt or compute_aux_loss or any(mm.get(k) is not None for k in _MULTIMODAL_KEYS)
                 or mm.get("num_images") and any(mm["num_images"])
                 or input_ids.size(1) - logits_to_keep - 1 < MIN_SHARED_PREFIX)
        if plain:
            if _has_imageless_chunk(mm, input_ids.size(0), batch_size or input_ids.size(0)):
                return self._logps_chunk_by_chunk(model, input_ids, attention_mask, logits_to_keep,
                                                  batch_size or input_ids.size(0), compute_entropy,
                                                  compute_aux_loss, mm)
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **mm)
        lm = causal_lm(self.accelerator.unwrap_model(model))
        key = cache_kwarg(lm.base_model)
        head = input_ids.size(1) - logits_to_keep - 1  # the prompt but its last token, whose logits score token 1
        batch_size = batch_size or input_ids.size(0)
        logps, ents = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids = input_ids[start:start + batch_size]
            mask = attention_mask[start:start + batch_size]
            with self.accelerator.autocast():
                cache, first = prefill_shared(lm, ids[:, :head], mask[:, :head], key=key, generation_positions=False)
                tail = ids[:, head:]
                labels = tail.masked_fill(mask[:, head:] == 0, -100)
                labels[:, 0] = -100
                out = model(input_ids=tail, attention_mask=mask, labels=labels, fused_lm_head=True, **{key: cache})
            self.shared_prompt_stats["logprob_rows"] += ids.size(0)
            self.shared_prompt_stats["logprob_prompt_rows"] += first.numel()
            logps.append(out.log_probs[:, -logits_to_keep:])
            if compute_entropy:
                ents.append(out.entropy[:, -logits_to_keep:])
        return torch.cat(logps, 0), (torch.cat(ents, 0) if compute_entropy else None), None

    # -- generation ----------------------------------------------------------------------------------------------
    def _generate_single_turn(self, prompt_ids: Any, images: Any, multimodal_fields: Any, num_generations: int,
                              has_tool_images: bool = False) -> Any:
        if not self.share_prompt or images is not None and any(x for x in images) or multimodal_fields:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images=has_tool_images)
        with self._shared_prompt_generate():
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images=has_tool_images)

    @contextmanager
    def _shared_prompt_generate(self) -> Any:
        target = self.accelerator.unwrap_model(self.model_wrapped)
        original = target.generate
        lm = causal_lm(target)
        key = cache_kwarg(lm.base_model)
        stats = self.shared_prompt_stats

        def generate(*args: Any, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                     **kwargs: Any) -> Any:
            if (args or input_ids is None or attention_mask is None or input_ids.size(1) - 1 < MIN_SHARED_PREFIX
                    or kwargs.get(key) is not None or any(kwargs.get(k) is not None for k in _MULTIMODAL_KEYS)):
                return original(*args, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            cache, first = prefill_shared(lm, input_ids[:, :-1], attention_mask[:, :-1], key=key,
                                          generation_positions=True)
            stats["generate_rows"] += input_ids.size(0)
            stats["generate_prompt_rows"] += first.numel()
            return original(input_ids=input_ids, attention_mask=attention_mask, **{key: cache}, **kwargs)

        had_own = "generate" in vars(target)  # an instance attribute someone set before us: put it back after
        target.generate = generate
        try:
            yield
        finally:
            if had_own:
                target.generate = original
            else:
                del target.generate
