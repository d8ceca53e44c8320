from __future__ import annotations

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
