"""A Qwen2-VL processor that works without torchvision.

In transformers 5.x `Qwen2VLProcessor` insists on a video processor, and the Qwen2-VL video processor needs
torchvision, which a CPU install must not pull in (it replaces CPU torch with a CUDA build). Images need only
`Qwen2VLImageProcessor`, so this processor is `Qwen2VLProcessor` minus the video slot. It stays a real
`ProcessorMixin` (TRL's GRPOTrainer recognises a vision-language model by that), expands each `<|image_pad|>`
into `image_grid_thw.prod() // merge_size**2` tokens, returns `mm_token_type_ids` (M-RoPE needs them), and
round-trips through `save_pretrained`/`from_pretrained`.
"""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin, Qwen2VLProcessor

# Chat template for checkpoints built here: ChatML with Qwen2-VL's image placeholder; no default system prompt.
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2-VL's vision special tokens, in Qwen's id order.
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]


def _flatten_images(images: Any) -> list[Any] | None:
    """TRL passes one list per prompt, `None` for a prompt without images; the image processor wants a flat list."""
    if images is None:
        return None
    if not isinstance(images, (list, tuple)):
        return [images]
    flat: list[Any] = []
    for x in images:
        if x is None:
            continue
        if isinstance(x, (list, tuple)):
            flat.extend(i for i in x if i is not None)
        else:
            flat.append(x)
    return flat or None


class QwenVLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` with image processor + tokenizer only (no video processor, so no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs):
        if videos is not None:
            raise ValueError("QwenVLProcessor handles images only (video needs torchvision)")
        return super().__call__(images=_flatten_images(images), text=text, **kwargs)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """As the base class, except that a conversation ending in an assistant turn is continued (the prefill)."""
        convs = conversation if conversation and isinstance(conversation[0], (list, tuple)) else [conversation]
        if "continue_final_message" not in kwargs and convs and all(c and c[-1].get("role") == "assistant"
                                                                    for c in convs):
            kwargs["continue_final_message"] = True
            kwargs["add_generation_prompt"] = False
        return super().apply_chat_template(conversation, chat_template, **kwargs)

    @classmethod
    def from_parts(cls, tokenizer: Any, *, min_pixels: int = 56 * 56, max_pixels: int = 224 * 224,
                   chat_template: str | None = None, image_processor: Any = None) -> QwenVLProcessor:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        ip = image_processor or Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
        template = chat_template or getattr(tokenizer, "chat_template", None) or QWEN_VL_CHAT_TEMPLATE
        return cls(image_processor=ip, tokenizer=tokenizer, chat_template=template)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):  # type: ignore[override]
        """Loads the image processor as the PIL backend explicitly (the default backend wants torchvision)."""
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tok_kw = {k: v for k, v in kwargs.items() if k in ("padding_side", "truncation_side", "local_files_only")}
        tok_kw.setdefault("padding_side", "left")  # generation batches are left-padded
        tok = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **tok_kw)
        ip = Qwen2VLImageProcessorPil.from_pretrained(pretrained_model_name_or_path)
        return cls(image_processor=ip, tokenizer=tok, chat_template=tok.chat_template)
