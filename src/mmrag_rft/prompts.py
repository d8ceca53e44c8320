"""The model's contract: chat prompts for stage 1 (point-wise) and stage 2 (list-wise + answer).

Every template lives here, so training, inference and evaluation cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

from mmrag_rft.models.chat import ChatPrompt

# ------------------------------------------------------------------------------------------------------------
# Templates. Question and instructions come first and the candidate(s) last, so that the prompts of all the
# candidates of one question share a token prefix (the backend reuses its KV cache).
# ------------------------------------------------------------------------------------------------------------

STAGE1_SYSTEM = (
    "You check evidence for a question answering system. You see a question and one piece of evidence "
    "(a text passage, a table, or an image with its caption). Decide whether the evidence helps to answer "
    "the question. First think briefly inside <think></think>, then give exactly yes or no inside "
    "<answer></answer>. Write nothing else.\n\n"
    "Example\n"
    "Question: What color are the domes of the Saint Basil's Cathedral?\n"
    "Evidence (image caption): Saint Basil's Cathedral in Moscow, with its colourful striped onion domes.\n"
    "Output: <think>The caption describes the domes and their colours, so it helps.</think><answer>yes</answer>"
)

# the worked example's reasoning: the grounding reward scores a copy of it as no reasoning at all
STAGE2_EXAMPLE_THINK = "[1] gives 333 m for Tokyo Tower and [3] gives 330 m for the Eiffel Tower; [2] is unrelated."
STAGE2_SYSTEM = (
    "You answer questions from numbered pieces of evidence (text passages, tables, or images with captions). "
    "First think briefly inside <think></think>. Then list inside <rank></rank> the ids of the evidence your "
    "answer rests on, most relevant first, joined by ' > ', leaving out evidence that does not help. Then give "
    "the answer as one short sentence inside <answer></answer>. Write nothing else.\n\n"
    "Example\n"
    "Question: Which is taller, the Eiffel Tower or the Tokyo Tower?\n"
    "[1] (text) Tokyo Tower is a communications tower 333 metres tall.\n"
    "[2] (image caption) A cat sleeping on a sofa.\n"
    "[3] (text) The Eiffel Tower is 330 metres tall.\n"
    f"Output: <think>{STAGE2_EXAMPLE_THINK}</think><rank>[1] > [3]</rank><answer>The Tokyo Tower is taller than "
    "the Eiffel Tower.</answer>"
)

STAGE1_PREFILL_REASON = "<think>"
STAGE1_PREFILL_SCORE = "<think>\n</think>\n<answer>"  # the next token is the verdict: read P(yes) there
STAGE2_PREFILL = "<think>"
STAGE2_RANK_PREFILL = "<think>\n</think>\n<rank>["  # the next token is the first ranked id: read P(id) there
MAX_SCORED_IDS = 9  # ids 1..9 are one token each in every tokenizer used here
STAGE2_MAX_CHARS = 600  # each candidate's text is clipped to this many characters in the stage-2 prompt

_MODALITY_LABEL = {"text": "text", "table": "table", "image": "image caption"}


def _clip(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 3].rstrip() + "..."


def candidate_label(candidate: Any) -> str:
    return _MODALITY_LABEL.get(getattr(candidate, "modality", "text"), "text")


STAGE1_SYSTEM_UNLABELLED = STAGE1_SYSTEM.replace("Evidence (image caption): ", "Evidence: ").replace(
    "The caption describes", "It describes")
STAGE1_SYSTEM_PLAIN = (
    "Decide whether a piece of evidence helps to answer a question. First think briefly inside <think></think>, "
    "then give exactly yes or no inside <answer></answer>."
)

# How the user turn is laid out (the output format is the same for all; see benchmarks/stage1_prompt_probe.py):
#   default         question, then the evidence (the shared prefix is question + instructions)
#   restate         as default, then the question asked again right before the verdict (a small model attends
#                   most to the last tokens; the shared prefix is kept)
#   evidence_first  the evidence, then the question (no prefix shared across candidates beyond the system turn)
#   plain           restate, with a short system turn without the worked example
#   unlabelled      default without the candidate's modality ("Evidence: ..."): where every gold piece of the
#                   training data is an image, a label would teach "text -> no" (benchmarks/stage1_modality_probe.py)
# configs take it; their loader checks it
Stage1Layout = Literal["default", "restate", "evidence_first", "plain", "unlabelled"]
STAGE1_LAYOUTS: tuple[str, ...] = get_args(Stage1Layout)


def stage1_prompt(question: str, candidate: Any, *, with_pixels: bool = False, image: Any = None,
                  style: Literal["reason", "score"] = "reason", max_chars: int = 1200,
                  layout: Stage1Layout = "default") -> ChatPrompt:
    """One question and one candidate -> `<think>…</think><answer>yes|no</answer>`.

    Captions/titles are always given as text; the pixels are added (before the caption) only for a
    vision-language backend (`with_pixels`) when the image is at hand.
    """
    if style not in ("reason", "score"):
        raise ValueError(f"style must be 'reason' or 'score', got {style!r}")
    if layout not in STAGE1_LAYOUTS:
        raise ValueError(f"stage-1 layout must be one of {', '.join(STAGE1_LAYOUTS)}; got {layout!r}")
    q = question.strip()
    evidence = "Evidence: " if layout == "unlabelled" else f"Evidence ({candidate_label(candidate)}): "
    body = _clip(candidate.display_text(), max_chars) or "(no text)"
    ask = f"\nDoes this evidence help to answer the question \"{q}\"? Answer yes or no."
    if layout == "evidence_first":
        head, tail = evidence, f"\nQuestion: {q}\nDoes this evidence help to answer the question? Answer yes or no."
    else:
        head, tail = f"Question: {q}\n{evidence}", ("" if layout in ("default", "unlabelled") else ask)
    if with_pixels and image is not None and candidate.modality == "image":
        content: Any = [{"type": "text", "text": head}, {"type": "image", "image": image},
                        {"type": "text", "text": body + tail}]
    else:
        content = head + body + tail
    system = {"plain": STAGE1_SYSTEM_PLAIN, "unlabelled": STAGE1_SYSTEM_UNLABELLED}.get(layout, STAGE1_SYSTEM)
    return ChatPrompt(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": content}],
        prefill=STAGE1_PREFILL_SCORE if style == "score" else STAGE1_PREFILL_REASON,
        meta={"stage": 1, "style": style, "candidate_id": candidate.id, "layout": layout},
    )


def short_ids(n: int) -> list[str]:
    return [str(i) for i in range(1, n + 1)]


def stage2_prompt(question: str, candidates: Sequence[Any], *, with_pixels: bool = False,
                  images: Sequence[Any] | None = None, max_chars: int = STAGE2_MAX_CHARS,
                  think: bool = True) -> ChatPrompt:
    """One question and K candidates tagged [1]..[K] -> `<think>…</think><rank>[i] > [j]</rank><answer>…</answer>`.

    `think=False` prefills an empty think block and `<rank>[`: the first token written is the first ranked id, the
    distribution `listwise.likelihood_ranking` reads.

    `meta["id_map"]` maps the short ids back to candidate ids (see `to_real_ids`); `meta["evidence"]` holds each
    candidate's text as shown, in prompt order (the grounding reward and metric read it).
    """
    ids = short_ids(len(candidates))
    images = list(images) if images is not None else [None] * len(candidates)
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"Question: {question.strip()}\nEvidence:"}]
    shown = []
    for sid, cand, img in zip(ids, candidates, images):
        line = f"\n[{sid}] ({candidate_label(cand)}) "
        body = _clip(cand.display_text(), max_chars) or "(no text)"
        shown.append(body)
        if with_pixels and img is not None and cand.modality == "image":
            parts += [{"type": "text", "text": line}, {"type": "image", "image": img}, {"type": "text", "text": body}]
        else:
            parts.append({"type": "text", "text": line + body})
    has_image = any(p["type"] == "image" for p in parts)
    content: Any = parts if has_image else "".join(p["text"] for p in parts)
    return ChatPrompt(
        messages=[{"role": "system", "content": STAGE2_SYSTEM}, {"role": "user", "content": content}],
        prefill=STAGE2_PREFILL if think else STAGE2_RANK_PREFILL,
        meta={"stage": 2, "id_map": {s: c.id for s, c in zip(ids, candidates)}, "num_candidates": len(ids),
              "evidence": shown},
    )


def to_real_ids(short: Sequence[str], id_map: dict[str, str]) -> tuple[list[str], list[str]]:
    """Short ids -> (candidate ids in order, short ids that name no candidate)."""
    real, invalid = [], []
    for s in short:
        (real if s in id_map else invalid).append(id_map.get(s, s))
    return real, invalid


def to_short_ids(real: Sequence[str], id_map: dict[str, str]) -> list[str]:
    """Candidate ids -> short ids (gold ids for stage-2 rewards); ids not in the prompt are dropped."""
    back = {v: k for k, v in id_map.items()}
    return [back[r] for r in real if r in back]
