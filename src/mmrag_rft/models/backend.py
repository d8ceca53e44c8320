"""The policy model as the pipeline sees it: batched generation and batched one-token scoring (P(yes), ids).

Concrete backends (Hugging Face causal LM, Hugging Face vision-language model, optional vLLM) implement
this protocol; the pipeline, evaluation and serving only ever talk to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from mmrag_rft.models.chat import ChatPrompt


@runtime_checkable
class PolicyBackend(Protocol):
    model_id: str
    supports_images: bool

    def generate(self, prompts: Sequence[ChatPrompt], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, num_return_sequences: int = 1, seed: int | None = None) -> list[list[str]]:
        """One list of completions per prompt. A completion is the text *after* the prompt's prefill."""
        ...

    def score_yes_no(self, prompts: Sequence[ChatPrompt], reuse_prefix: bool = True) -> list[float]:
        """P(yes) / (P(yes) + P(no)) for the token right after each prompt's prefill.

        `reuse_prefix`: a backend may compute the prompts' shared token prefix once (same scores, less work).
        """
        ...

    def score_choices(self, prompts: Sequence[ChatPrompt], choices: Sequence[Sequence[str]],
                      reuse_prefix: bool = True) -> list[list[float]]:
        """Per prompt, each choice's probability at the token after the prefill, normalised over the choices; a
        choice is its single-token spellings (summed). P(yes) is the two-choice case; stage 2's list-wise ranking
        reads the candidate ids."""
        ...
