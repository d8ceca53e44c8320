"""The one record type every stage consumes: a question with its candidate pool and gold evidence.

Loaders (WebQA, MMQA, our JSONL) all produce `Sample`; nothing downstream knows which benchmark a sample
came from except through `dataset` and `meta`.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Modality = Literal["text", "image", "table"]
MODALITIES: tuple[str, ...] = ("text", "image", "table")


class DataError(ValueError):
    """Bad input, with where it is: file, row (line number or key) and field."""

    def __init__(self, message: str, *, file: str | None = None, row: int | str | None = None,
                 field: str | None = None):
        self.file, self.row, self.field, self.reason = file, row, field, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", type(None): "null", bool: "a boolean"}.get(type(v), type(v).__name__)


def as_id(v: Any, field: str) -> str:
    """An id: a string or an integer (datasets number their items); anything else is an error, never its repr."""
    if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)):
        return str(v)
    raise DataError(f"must be a string or an integer id, got {_kind(v)}", field=field)


def as_text(v: Any, field: str) -> str:
    """A text field: a string (a number is written out; null is empty); an object or list is an error."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise DataError(f"must be a string, got {_kind(v)}", field=field)


def _optional_str(v: Any, field: str) -> str | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise DataError(f"must be a string, got {_kind(v)}", field=field)
    return v


@dataclass
class Candidate:
    """One piece of evidence: a text passage, a table (linearised into `text`) or an image.

    For images `text` holds the caption, which is what a text-only model sees instead of pixels.
    Pixels come from `image_path` (a file), `image_bytes` (e.g. WebQA's base64 TSV) or `image_url`
    (never fetched by us; kept for display and provenance).
    """

    id: str
    modality: Modality
    title: str = ""
    text: str = ""
    image_path: str | None = None
    image_url: str | None = None
    image_bytes: bytes | None = field(default=None, repr=False)
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise DataError("candidate id must be a non-empty string", field="id")
        if self.modality not in MODALITIES:
            raise DataError(f"modality must be one of {MODALITIES}, got {self.modality!r}", field="modality")

    @property
    def has_pixels(self) -> bool:
        return self.image_bytes is not None or self.image_path is not None

    def display_text(self) -> str:
        """What a model without eyes reads for this candidate."""
        body = self.text.strip()
        title = self.title.strip()
        if title and not body.lower().startswith(title.lower()):
            return f"{title}. {body}" if body else title
        return body or title

    def to_dict(self, *, with_bytes: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["image_bytes"] = base64.b64encode(self.image_bytes).decode() if (with_bytes and self.image_bytes) else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        if not isinstance(d, dict):
            raise DataError(f"candidate must be an object, got {type(d).__name__}")
        for key in ("id", "modality"):
            if key not in d:
                raise DataError("missing required field", field=key)
        raw = d.get("image_bytes")
        try:
            image_bytes = base64.b64decode(raw) if isinstance(raw, str) and raw else None
        except ValueError as e:
            raise DataError(f"image_bytes is not valid base64 ({e})", field="image_bytes") from None
        return cls(
            id=as_id(d["id"], "id"), modality=d["modality"], title=as_text(d.get("title"), "title"),
            text=as_text(d.get("text"), "text"), image_path=_optional_str(d.get("image_path"), "image_path"),
            image_url=_optional_str(d.get("image_url"), "image_url"), image_bytes=image_bytes,
            source=as_text(d.get("source"), "source"),
        )


@dataclass
class Sample:
    """A question, its candidate pool, and what the benchmark says is right."""

    qid: str
    question: str
    answers: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    gold_ids: list[str] = field(default_factory=list)
    category: str = ""
    dataset: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.qid, str) or not self.qid.strip():
            raise DataError("qid must be a non-empty string", field="qid")
        if not isinstance(self.question, str) or not self.question.strip():
            raise DataError("question must be a non-empty string", field="question")
        seen: set[str] = set()
        for c in self.candidates:
            if c.id in seen:
                raise DataError(f"duplicate candidate id {c.id!r}", field="candidates")
            seen.add(c.id)
        missing = [g for g in self.gold_ids if g not in seen]
        if self.candidates and missing:
            raise DataError(f"gold ids not among the candidates: {missing[:5]}", field="gold_ids")

    @property
    def gold_set(self) -> set[str]:
        return set(self.gold_ids)

    def candidate(self, cid: str) -> Candidate:
        for c in self.candidates:
            if c.id == cid:
                return c
        raise KeyError(cid)

    def to_dict(self, *, with_bytes: bool = False) -> dict[str, Any]:
        return {
            "qid": self.qid, "question": self.question, "answers": list(self.answers),
            "candidates": [c.to_dict(with_bytes=with_bytes) for c in self.candidates],
            "gold_ids": list(self.gold_ids), "category": self.category, "dataset": self.dataset,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        if not isinstance(d, dict):
            raise DataError(f"sample must be an object, got {type(d).__name__}")
        for key in ("qid", "question"):
            if key not in d:
                raise DataError("missing required field", field=key)
        answers = d.get("answers", [])
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list):
            raise DataError("answers must be a list of strings", field="answers")
        cands = d.get("candidates", [])
        if not isinstance(cands, list):
            raise DataError("candidates must be a list", field="candidates")
        parsed = []
        for i, c in enumerate(cands):
            try:
                parsed.append(Candidate.from_dict(c))
            except DataError as e:
                raise DataError(e.reason, field=f"candidates[{i}].{e.field}" if e.field else f"candidates[{i}]") from None
        gold = d.get("gold_ids", [])
        if not isinstance(gold, list):
            raise DataError("gold_ids must be a list", field="gold_ids")
        meta = d.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise DataError(f"must be an object, got {_kind(meta)}", field="meta")
        return cls(
            qid=as_id(d["qid"], "qid"), question=as_text(d["question"], "question"),
            answers=[as_text(a, f"answers[{i}]") for i, a in enumerate(answers)], candidates=parsed,
            gold_ids=[as_id(g, f"gold_ids[{i}]") for i, g in enumerate(gold)],
            category=as_text(d.get("category"), "category"), dataset=as_text(d.get("dataset"), "dataset"),
            meta=dict(meta or {}),
        )
