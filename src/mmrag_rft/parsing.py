"""Parsers for the model's two output templates. They never raise, whatever the text.

Tolerant reading, strict judging: tags and yes/no in any case, any whitespace between blocks, a missing
<think>, an unclosed last tag are all read best-effort into the fields; `ok` is True only for a strictly
valid output, and `checks` says which parts of the template were right (the shaped format rewards sum them):

stage 1  think   a closed <think>…</think> block
         answer  a closed <answer>…</answer> block
         value   the answer is exactly yes or no (any case, surrounding whitespace allowed)
         clean   the blocks appear once each, in template order, with nothing but whitespace outside them
stage 2  think   as above
         rank    a closed <rank>…</rank> block holding at least one id, written only as ids ("[3]" or "3")
                 separated by '>', ',', ';' or spaces
         ids     every ranked id names a candidate (1..K, when K is known) and none repeats
         answer  a closed <answer>…</answer> block with non-empty text
         clean   as above

The text given may or may not start with the prompt's prefill: it is prepended when missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FLAGS = re.IGNORECASE | re.DOTALL
_WS = re.compile(r"\s+")
_ID_TOKEN = r"(?:\[\s*\d+\s*\]|\d+)"
_RANK_STRICT = re.compile(rf"\A\s*{_ID_TOKEN}(?:\s*[>,;]?\s*{_ID_TOKEN})*\s*\Z")
_TAG = re.compile(r"</?\s*(think|answer|rank)\s*>", re.IGNORECASE)


@dataclass
class Stage1Output:
    ok: bool
    error: str | None
    think: str
    decision: str | None  # "yes" | "no" | None
    checks: dict[str, bool] = field(default_factory=dict)


@dataclass
class Stage2Output:
    ok: bool
    error: str | None
    think: str
    rank: list[str]  # short ids as written ("3"), first occurrence order; may include out-of-range ids
    answer: str
    invalid_ids: list[str] = field(default_factory=list)  # out of 1..K
    duplicate_ids: list[str] = field(default_factory=list)  # repeated after their first mention
    checks: dict[str, bool] = field(default_factory=dict)
    raw_ids: list[str] = field(default_factory=list)  # every id as listed, repeats included


def with_prefill(text: str, prefill: str = "") -> str:
    """Prefix the prefill unless the text already starts with it (compared ignoring whitespace and case) or
    is a whole output on its own (starts with <think>)."""
    text = text if isinstance(text, str) else ("" if text is None else str(text))
    if not prefill or not prefill.strip():
        return text
    squashed = _WS.sub("", text).lower()
    if squashed.startswith(_WS.sub("", prefill).lower()) or squashed.startswith("<think>"):
        return text
    return prefill + text


def _block(text: str, tag: str) -> tuple[str | None, bool]:
    """(content of the first <tag> block, closed?). An unclosed tag runs to the next tag or the end."""
    m = re.search(rf"<\s*{tag}\s*>(.*?)<\s*/\s*{tag}\s*>", text, _FLAGS)
    if m:
        return m.group(1), True
    m = re.search(rf"<\s*{tag}\s*>(.*?)(?=<\s*/?\s*(?:think|answer|rank)\s*>|\Z)", text, _FLAGS)
    if m:
        return m.group(1), False
    return None, False


def _clean(text: str, order: tuple[str, ...]) -> bool:
    """Blocks appear once each, in `order`, and only whitespace lies outside them."""
    pattern = r"\A\s*" + r"\s*".join(rf"<\s*{t}\s*>(?:(?!<\s*/?\s*(?:think|answer|rank)\s*>).)*?<\s*/\s*{t}\s*>"
                                       for t in order) + r"\s*\Z"
    return re.match(pattern, text, _FLAGS) is not None


def _first_error(checks: dict[str, bool], messages: dict[str, str]) -> str | None:
    for k, ok in checks.items():
        if not ok:
            return messages[k]
    return None


def parse_stage1(text: str, *, prefill: str = "") -> Stage1Output:
    try:
        return _parse_stage1(with_prefill(text, prefill))
    except Exception as e:  # the contract is: never raise on model output
        return Stage1Output(False, f"unparseable output ({type(e).__name__})", "", None,
                            {"think": False, "answer": False, "value": False, "clean": False})


def _parse_stage1(text: str) -> Stage1Output:
    think, think_closed = _block(text, "think")
    ans, ans_closed = _block(text, "answer")
    decision = None
    value_ok = False
    if ans is not None:
        value_ok = re.fullmatch(r"\s*(yes|no)\s*", ans, re.IGNORECASE) is not None
        m = re.match(r"\s*[\"'*]*\s*(yes|no)\b", ans, re.IGNORECASE)
        decision = m.group(1).lower() if m else None
    else:  # no answer tag: a bare yes/no after the reasoning still tells what the model meant
        tail = re.split(r"<\s*/\s*think\s*>", text, maxsplit=1, flags=re.IGNORECASE)[-1] if think_closed else ""
        m = re.search(r"\b(yes|no)\b", _TAG.sub(" ", tail), re.IGNORECASE)
        decision = m.group(1).lower() if m else None
    checks = {"think": think is not None and think_closed, "answer": ans is not None and ans_closed,
              "value": value_ok, "clean": _clean(text, ("think", "answer"))}
    error = _first_error(checks, {
        "think": "missing <think>…</think> block", "answer": "missing <answer>…</answer> block",
        "value": f"answer is not yes/no: {(ans or '').strip()[:40]!r}", "clean": "text outside the tags or tags out of order",
    })
    return Stage1Output(ok=error is None, error=error, think=(think or "").strip(), decision=decision, checks=checks)


def parse_rank_ids(content: str) -> list[str]:
    """Every id in a rank string, in order, repeats kept: "[3] > [1]", "3 > 1", "[3], [1]" -> ["3", "1"]."""
    return [str(int(x)) for x in re.findall(r"\d+", content or "")[:1000]]


def parse_stage2(text: str, *, prefill: str = "", num_candidates: int | None = None) -> Stage2Output:
    try:
        return _parse_stage2(with_prefill(text, prefill), num_candidates)
    except Exception as e:
        return Stage2Output(False, f"unparseable output ({type(e).__name__})", "", [], "",
                            checks={"think": False, "rank": False, "ids": False, "answer": False, "clean": False})


def _parse_stage2(text: str, k: int | None) -> Stage2Output:
    think, think_closed = _block(text, "think")
    rank_txt, rank_closed = _block(text, "rank")
    ans, ans_closed = _block(text, "answer")
    raw_ids = parse_rank_ids(rank_txt) if rank_txt is not None else []
    rank: list[str] = []
    dups: list[str] = []
    for i in raw_ids:
        (dups if i in rank else rank).append(i)
    invalid = [i for i in rank if k is not None and not 1 <= int(i) <= k]
    if ans is None:  # best effort: whatever follows the rank (or the reasoning), tags removed
        cut = re.split(r"<\s*/\s*(?:rank|think)\s*>", text, flags=re.IGNORECASE)
        answer = _TAG.sub(" ", cut[-1]).strip() if len(cut) > 1 else ""
    else:
        answer = ans.strip()
    rank_ok = rank_txt is not None and rank_closed and bool(raw_ids) and _RANK_STRICT.match(rank_txt) is not None
    checks = {"think": think is not None and think_closed, "rank": rank_ok,
              "ids": bool(raw_ids) and not invalid and not dups,
              "answer": ans is not None and ans_closed and bool(answer),
              "clean": _clean(text, ("think", "rank", "answer"))}
    error = _first_error(checks, {
        "think": "missing <think>…</think> block",
        "rank": "missing or malformed <rank>…</rank> block" if rank_txt is None or not raw_ids or not rank_closed
        else f"rank is not a list of ids: {rank_txt.strip()[:40]!r}",
        "ids": f"rank names unknown ids {_ids(invalid)}" if invalid
        else (f"rank repeats ids {_ids(dups)}" if dups else "empty rank"),
        "answer": "missing or empty <answer>…</answer> block",
        "clean": "text outside the tags or tags out of order",
    })
    return Stage2Output(ok=error is None, error=error, think=(think or "").strip(), rank=rank, answer=answer,
                        invalid_ids=invalid, duplicate_ids=dups, checks=checks, raw_ids=raw_ids)


def _ids(ids: list[str]) -> str:
    return ", ".join(f"[{i}]" for i in ids)
