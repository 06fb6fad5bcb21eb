import os
from pathlib import Path

import pytest

os.environ["WANDB_MODE"] = "disabled"

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The verified data copies beside the checkout; tests using them skip elsewhere."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
