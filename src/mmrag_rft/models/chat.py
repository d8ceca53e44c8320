"""The model's input: a chat in Hugging Face's multimodal message format plus an assistant prefill.

Backends take it and `prompts` builds it; it lives with the models so that no backend imports the stage templates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def message_text(content: Any) -> str:
    """A message as text alone: a string as it is, a list of parts joined by their text (images dropped: their
    captions are text already)."""
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content or [] if p.get("type") == "text")


def image_placeholders(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each image part reduced to `{"type": "image"}`: a chat template needs to see where an
    image is, not its pixels."""
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            c = [{"type": "image"} if p.get("type") == "image" else p for p in c]
        out.append({**m, "content": c})
    return out


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
