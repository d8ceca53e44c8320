from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMRAG_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real WebQA/MMQA files beside the checkout (../shared/data); CI has them."""
    d = SHARED / "data"
    if not d.is_dir():
        pytest.skip(f"real benchmark data not found at {d} (set MMRAG_SHARED to the shared folder)")
    return d


@pytest.fixture(scope="session")
def tiny_samples(tmp_path_factory) -> Path:
    """Six questions, four text candidates each, one gold: training data for the tiny models (read only)."""
    from mmrag_rft.data.schema import Candidate, Sample

    rows = []
    for q in range(6):
        cands = [Candidate(id=f"q{q}-c{i}", modality="text", title=f"Doc {i}", text=f"Fact {i} about topic {q}.")
                 for i in range(4)]
        rows.append(Sample(qid=f"q{q}", question=f"What is fact {q}?", answers=[f"fact {q}"], candidates=cands,
                           gold_ids=[f"q{q}-c{q % 4}"], category="Others", dataset="jsonl").to_dict())
    p = tmp_path_factory.mktemp("tiny_samples") / "samples.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p
