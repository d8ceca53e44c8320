"""Held-out checks of a (trained) policy, used by the RL benchmarks: stage-1 P(yes) and sampled outputs with
their rewards. Plain transformers calls so that a checkpoint folder is all that is needed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmrag_rft.prompts import ChatPrompt


def render(tok: Any, prompt: ChatPrompt) -> str:
    conv = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
             "".join(p.get("text") or "" for p in m["content"] if p.get("type") == "text")}
            for m in prompt.to_conversation()]
    return tok.apply_chat_template(conv, continue_final_message=True, tokenize=False)


def score_yes_no(model: Any, tok: Any, prompts: Sequence[ChatPrompt], batch_size: int = 8) -> list[float]:
    """P(yes) / (P(yes) + P(no)) at the token after each (score-style) prompt's prefill."""
    import torch

    yes = tok.encode("yes", add_special_tokens=False)[0]
    no = tok.encode("no", add_special_tokens=False)[0]
    side, tok.padding_side = tok.padding_side, "left"
    out: list[float] = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [render(tok, p) for p in prompts[i:i + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                logits = model(**enc).logits[:, -1, :].float()
            out += torch.softmax(logits[:, [yes, no]], dim=-1)[:, 0].tolist()
    finally:
        tok.padding_side = side
    return out


def generate(model: Any, tok: Any, prompts: Sequence[ChatPrompt], *, max_new_tokens: int, batch_size: int = 8,
             do_sample: bool = False, temperature: float = 1.0, seed: int = 0) -> list[str]:
    """One completion per prompt (the text after the prefill)."""
    import torch

    torch.manual_seed(seed)
    side, tok.padding_side = tok.padding_side, "left"
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [render(tok, p) for p in prompts[i:i + batch_size]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                     temperature=temperature if do_sample else None, top_p=None, top_k=None,
                                     pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return out


def binary_metrics(pred: Sequence[bool | None], gold: Sequence[bool]) -> dict[str, float]:
    """Accuracy / precision / recall / F1 of the positive class; an unreadable prediction counts as wrong."""
    tp = sum(1 for p, g in zip(pred, gold) if p is True and g)
    fp = sum(1 for p, g in zip(pred, gold) if p is True and not g)
    fn = sum(1 for p, g in zip(pred, gold) if p is not True and g)
    correct = sum(1 for p, g in zip(pred, gold) if p is not None and p == g)
    n = len(gold)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"accuracy": correct / n if n else 0.0, "precision": prec, "recall": rec, "f1": f1, "n": n}
