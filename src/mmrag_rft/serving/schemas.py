"""The API's request and response models. A response is the pipeline's own `Result`: its Pydantic model is built from
the dataclass (fields, types, defaults and the comments that document them), so a field added to `Result` reaches
the API and its schema without a second copy to keep in step."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from mmrag_rft.config import field_help
from mmrag_rft.pipeline import Judgement, Result


class AskRequest(BaseModel):
    """A question and optional per-request overrides of the pipeline's retrieval depth and coarse filter."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(..., description="The question (surrounding whitespace is ignored).")
    top_n: int | None = Field(None, ge=1, le=100, description="Candidates retrieved from the index.")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Stage-1 P(yes) needed to be kept.")
    top_k: int | None = Field(None, ge=0, le=50, description="At most this many candidates reach stage 2.")


class CandidateOut(BaseModel):
    id: str
    modality: Literal["text", "image", "table"]
    title: str = ""
    text: str = Field("", description="Passage, linearised table, or image caption (a snippet in answers).")
    truncated: bool = False
    source: str = ""
    image_url: str | None = Field(None, description="This server's URL for the candidate's image, if it has one.")


def model_of(cls: type, name: str, *, types: dict[str, Any] | None = None, **extra: Any) -> type[BaseModel]:
    """A Pydantic model with the dataclass's fields (`types` replaces a field's type), plus `extra` fields."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = Field(f.default, description=helps.get(f.name) or None)
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory, description=helps.get(f.name) or None)
        else:
            default = Field(..., description=helps.get(f.name) or None)
        fields[f.name] = ((types or {}).get(f.name, hints[f.name]), default)
    return create_model(name, __doc__=cls.__doc__, **fields, **extra)


JudgementOut = model_of(Judgement, "JudgementOut")
AskResponse = model_of(
    Result, "AskResponse", types={"judgements": list[JudgementOut]},  # type: ignore[valid-type]
    candidates=(dict[str, CandidateOut], Field(..., description="Display info for every judged candidate.")))


class Health(BaseModel):
    status: Literal["ok"]
    busy: bool = Field(..., description="A question is being answered right now.")
    queued: int = Field(..., description="Questions waiting for the model (not counting the running one).")
    model: str
    index_size: int | None


class Info(BaseModel):
    model: str
    stage2_model: str | None = None  # the model that reads the survivors and answers, when it is not `model`
    index_size: int | None
    defaults: dict[str, Any]
    limits: dict[str, Any]


ASK_BODY_DOC = {  # /v1/ask parses its body itself (JSON or form), so its OpenAPI body is declared here
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/AskRequest"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["question"],
                "properties": {
                    "question": {"type": "string"},
                    "top_n": {"type": "integer", "minimum": 1, "maximum": 100},
                    "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                    "top_k": {"type": "integer", "minimum": 0, "maximum": 50},
                    "image": {"type": "string", "format": "binary", "description": "Optional query image."},
                }}},
        },
    }
}
