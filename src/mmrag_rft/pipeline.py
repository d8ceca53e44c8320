"""retrieve -> stage 1 (point-wise judgements) -> coarse filter -> stage 2 (list-wise rank + answer) -> Result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class FilterConfig:
    """The coarse filter between the stages: keep candidates with P(yes) >= threshold, at most top_k of them."""

    threshold: float = 0.5
    top_k: int = 5
    min_keep: int = 0  # keep at least this many (best-scored) even below the threshold; 0 lets stage 1 abstain


@dataclass
class PipelineConfig:
    top_n: int = 20  # candidates retrieved (or taken from the sample's own pool)
    stage1_mode: Literal["score", "reason"] = "score"
    stage1_samples: int = 3  # reason mode: sampled judgements per candidate, majority vote
    stage1_max_new_tokens: int = 64
    stage1_batch_size: int = 16
    filter: FilterConfig = field(default_factory=FilterConfig)
    stage2_max_new_tokens: int = 160
    stage2_temperature: float = 0.0
    use_pixels: bool = True  # pass image pixels to a vision-language backend (captions are always given)


@dataclass
class Judgement:
    """Stage 1's verdict on one candidate."""

    id: str
    score: float  # P(yes) in score mode, share of 'yes' votes in reason mode
    relevant: bool
    kept: bool
    retrieval_score: float | None = None
    reason: str = ""  # the <think> text in reason mode


@dataclass
class Result:
    """Everything a user needs to trust (or not) an answer."""

    question: str
    answer: str
    rank: list[str]  # candidate ids the answer rests on, most relevant first
    reasoning: str
    judgements: list[Judgement]
    kept_ids: list[str]
    abstained: bool = False
    fallback: str | None = None  # why stage 2's own ranking was not used, if it was not
    faithful: bool = True
    unfaithful_ids: list[str] = field(default_factory=list)
    raw_stage2: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    qid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
