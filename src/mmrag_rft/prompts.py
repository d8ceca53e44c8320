"""The model's contract: chat prompts for stage 1 (point-wise) and stage 2 (list-wise + answer).

Every template lives here, so training, inference and evaluation cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChatPrompt:
    """A chat in Hugging Face's multimodal message format, plus an optional assistant prefill.

    `messages` content is a string or a list of parts: {"type": "text", "text": ...} or
    {"type": "image", "image": <PIL.Image>}. `prefill` is the text the assistant turn starts with;
    the model continues it (this is how a small model is kept inside the tag template).
    """

    messages: list[dict[str, Any]]
    prefill: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def images(self) -> list[Any]:
        out = []
        for m in self.messages:
            if isinstance(m.get("content"), list):
                out.extend(p["image"] for p in m["content"] if p.get("type") == "image" and p.get("image") is not None)
        return out

    def to_conversation(self) -> list[dict[str, Any]]:
        """TRL's conversational `prompt`: a trailing assistant message is continued, not closed."""
        conv = [dict(m) for m in self.messages]
        if self.prefill:
            conv.append({"role": "assistant", "content": self.prefill})
        return conv
