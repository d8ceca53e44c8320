"""Optional vLLM backend for GPU machines (`pip install vllm`); same prompts and contract as `HFBackend`.

Prompts are rendered with the model's own chat template (through its HF processor/tokenizer) plus the prefill,
and images go in vLLM's multimodal input, `{"prompt": text, "multi_modal_data": {"image": [...]}}`, where the
template has left one image placeholder per image. Scoring (stage 1's P(yes), stage 2's
list-wise ids) generates one token and reads the choices among the top-20 logprobs (one outside counts as 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mmrag_rft.models.hf import NO_VARIANTS, YES_VARIANTS
from mmrag_rft.models.chat import ChatPrompt, image_placeholders, message_text

SCORE_TOP_LOGPROBS = 20


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMBackend:
    def __init__(self, model: str, *, max_images_per_prompt: int = 8, **llm_kwargs: Any):
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("the vLLM backend needs vllm on a GPU machine: pip install 'mmrag-rft[gpu]' "
                              "(or use the default Hugging Face backend)") from e
        from mmrag_rft.models.loading import is_vision_model

        self.model_id = str(model)
        self.supports_images = is_vision_model(self.model_id)
        if self.supports_images:
            llm_kwargs.setdefault("limit_mm_per_prompt", {"image": max_images_per_prompt})
        self.llm = LLM(model=self.model_id, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._chat = self.tokenizer
        if self.supports_images:
            from mmrag_rft.models.hf import load_vl_processor

            self._chat = load_vl_processor(self.model_id, config)

    def _single_ids(self, variants: Sequence[str]) -> set[int]:
        out = set()
        for v in variants:
            enc = self.tokenizer.encode(v, add_special_tokens=False)
            if len(enc) == 1:
                out.add(enc[0])
        return out

    def _inputs(self, prompt: ChatPrompt) -> dict[str, Any]:
        if self.supports_images:
            text = self._chat.apply_chat_template(image_placeholders(prompt.messages), add_generation_prompt=True,
                                                  tokenize=False)
        else:
            msgs = [{**m, "content": message_text(m.get("content"))} for m in prompt.messages]
            text = self._chat.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        item: dict[str, Any] = {"prompt": text + prompt.prefill}
        images = prompt.images() if self.supports_images else []
        if images:
            item["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
        return item

    def generate(self, prompts: Sequence[ChatPrompt], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, num_return_sequences: int = 1, seed: int | None = None) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=max(1, num_return_sequences), temperature=max(0.0, temperature),
                                top_p=top_p if temperature > 0 else 1.0, max_tokens=max_new_tokens, seed=seed)
        outs = self.llm.generate([self._inputs(p) for p in prompts], params, use_tqdm=False)
        return [[c.text for c in o.outputs] for o in outs]

    def score_choices(self, prompts: Sequence[ChatPrompt], choices: Sequence[Sequence[str]],
                      reuse_prefix: bool = True) -> list[list[float]]:
        """As `HFBackend.score_choices`, from the top-20 logprobs of one generated token (vLLM's prefix caching
        plays the role of `reuse_prefix`; the argument is accepted for parity)."""
        from vllm import SamplingParams

        groups = [self._single_ids(c) for c in choices]
        missing = [c for c, g in zip(choices, groups) if not g]
        if missing:
            raise ValueError(f"{self.model_id}: no single-token spelling for choice(s) {missing}")
        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=SCORE_TOP_LOGPROBS)
        outs = self.llm.generate([self._inputs(p) for p in prompts], params, use_tqdm=False)
        scores = []
        for o in outs:
            top = o.outputs[0].logprobs[0] if o.outputs and o.outputs[0].logprobs else {}
            mass = [sum(math.exp(lp.logprob) for tid, lp in top.items() if tid in g) for g in groups]
            tot = sum(mass)
            scores.append([m / tot for m in mass] if tot > 0 else [1.0 / len(groups)] * len(groups))
        return scores

    def score_yes_no(self, prompts: Sequence[ChatPrompt], reuse_prefix: bool = True) -> list[float]:
        return [p[0] for p in self.score_choices(prompts, [YES_VARIANTS, NO_VARIANTS])]
