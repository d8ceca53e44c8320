"""A short supervised warm-up on the output *format* only, before RL (the R1-style cold start).

A 135M model asked cold for `<think>…</think><answer>yes|no</answer>` never produces it, so every group has
zero reward variance and GRPO learns nothing. The warm-up teaches the tags and nothing else: the targets carry
no gold information.
- stage 1: neutral filler reasoning + a verdict drawn at RANDOM (never the label);
- stage 2: neutral filler reasoning + a random subset of the prompt's short ids in random order + an "answer"
  that is a random span of a random candidate's own text (prompt input, not the gold answer).
The prompt part is masked out of the loss. A temporary LoRA is trained with a plain AdamW loop and merged into
the base weights (saved to `OUTPUT/warmup/`), so RL then starts a fresh LoRA from the warmed-up model and a
resumed run reuses it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmrag_rft.config import atomic_write_text, replacing_dir
from mmrag_rft.models.chat import message_text
from mmrag_rft.training.config import LoraSection, WarmupSection

WARMUP_DIR = "warmup"

FILLER = (
    "I compare the evidence with the question.",
    "I check whether the evidence mentions what the question asks about.",
    "I look at the key words of the question and of the evidence.",
    "The evidence should be read against the question.",
)
STAGE2_FILLER = (
    "I read each piece of evidence and compare it with the question.",
    "I check which pieces of evidence mention what the question asks about.",
    "I look for the evidence that the answer can rest on.",
)


def stage1_target(rng: random.Random, prefill: str = "<think>") -> str:
    """Continuation of the prefill: format only, verdict random. A prefill that already opens <answer> (the
    no-think prompt) is continued with the verdict alone."""
    verdict = rng.choice(("yes", "no"))
    if prefill.rstrip().endswith("<answer>"):
        return f"{verdict}</answer>"
    return f"{rng.choice(FILLER)}</think><answer>{verdict}</answer>"


def stage2_target(evidence: Sequence[str], rng: random.Random, prefill: str = "<think>") -> str:
    """Random ids in random order + a random span of a random candidate (`evidence`: each candidate's text as the
    prompt shows it): no gold ranking, no gold answer. A prefill that already opens `<rank>[` (the no-think prompt)
    is continued from inside the list."""
    ids = [str(i) for i in range(1, len(evidence) + 1)]
    picked = rng.sample(ids, rng.randint(1, min(3, len(ids))))
    words = (rng.choice(evidence).split() if evidence else []) or ["unknown"]
    n = min(len(words), rng.randint(3, 8))
    start = rng.randint(0, len(words) - n)
    span = " ".join(words[start:start + n]).strip(" .,;:")
    rank = " > ".join(f"[{i}]" for i in picked)
    if prefill.rstrip().endswith("<rank>["):
        return f"{rank[1:]}</rank><answer>{span}.</answer>"
    return f"{rng.choice(STAGE2_FILLER)}</think><rank>{rank}</rank><answer>{span}.</answer>"


def _text_only(prompt: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Image placeholders dropped (the warm-up teaches tags, not vision); every content a string."""
    return [{"role": m["role"], "content": message_text(m["content"])} for m in prompt]


def warmup_examples(rows: list[dict[str, Any]], *, stage: int, n: int, seed: int = 0) -> list[tuple[list[dict[str, Any]], str]]:
    """(conversation ending in the prefill, target continuation) pairs drawn from the RL rows."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        row = rows[rng.randrange(len(rows))]
        prompt, prefill = _text_only(row["prompt"]), row.get("prefill") or "<think>"
        tgt = stage1_target(rng, prefill) if stage == 1 else stage2_target(row["evidence"], rng, prefill)
        out.append((prompt, tgt))
    return out


def completion_batch(tok: Any, batch: list[tuple[list[dict[str, Any]], str]]) -> tuple[Any, Any, Any]:
    """(input_ids, attention_mask, labels) for (conversation ending in a prefill, target) pairs: right-padded,
    the prompt masked out of the loss, the target closed with the end-of-turn token."""
    import torch

    eos = tok.eos_token or ""
    ids, labels = [], []
    for conv, tgt in batch:
        ptxt = tok.apply_chat_template(conv, continue_final_message=True, tokenize=False)
        p_ids = tok(ptxt, add_special_tokens=False)["input_ids"]
        t_ids = tok(tgt + eos, add_special_tokens=False)["input_ids"]
        ids.append(p_ids + t_ids)
        labels.append([-100] * len(p_ids) + t_ids)
    width = max(len(x) for x in ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return (torch.tensor([x + [pad] * (width - len(x)) for x in ids]),
            torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids]),
            torch.tensor([x + [-100] * (width - len(x)) for x in labels]))


def format_warmup(model: Any, processing_class: Any, rows: list[dict[str, Any]], *, stage: int, cfg: WarmupSection,
                  lora: LoraSection, is_vlm: bool, out_dir: Path, key: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a temporary LoRA on format targets for `cfg.steps` steps, merge it, save the model to `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from rich.progress import Progress

    from mmrag_rft.training.lora import lora_target

    tok = getattr(processing_class, "tokenizer", processing_class)
    torch.manual_seed(cfg.seed)
    peft_model = get_peft_model(model, LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=lora_target(lora.target_modules, is_vlm, True)))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    examples = warmup_examples(rows, stage=stage, n=cfg.steps * cfg.batch_size, seed=cfg.seed)
    peft_model.train()
    losses = []
    with Progress(transient=True) as bar:
        task = bar.add_task("format warm-up", total=cfg.steps)
        for step in range(cfg.steps):
            batch = examples[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            input_ids, attn, lab = completion_batch(tok, batch)
            loss = peft_model(input_ids=input_ids.to(peft_model.device), attention_mask=attn.to(peft_model.device),
                              labels=lab.to(peft_model.device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad()
            losses.append(float(loss.detach()))
            bar.update(task, advance=1, description=f"format warm-up loss {losses[-1]:.3f}")
    merged = peft_model.merge_and_unload()
    merged.eval()
    info = {"steps": cfg.steps, "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "targets": "format only: random verdict / random ids and a random candidate span; no gold labels",
            "key": key}
    with replacing_dir(out_dir) as tmp:
        merged.save_pretrained(tmp)
        processing_class.save_pretrained(tmp)
        atomic_write_text(tmp / "warmup.json", json.dumps(info, indent=2))
    return info
