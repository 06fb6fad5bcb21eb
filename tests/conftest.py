import os
from pathlib import Path

import pytest

from mixerflow import load_config, train
from support import QUICKSTARTS

os.environ["WANDB_MODE"] = "disabled"

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The verified data copies beside the checkout; tests using them skip elsewhere."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict:
    """A briefly trained digits checkpoint of each quick-start kind."""
    paths = {}
    for name, config in QUICKSTARTS.items():
        out = tmp_path_factory.mktemp(name)
        cfg = load_config(config, ["train.steps=150", "log.num_samples=4", f"log.out_dir={out}"])
        train(cfg, show_progress=False)
        paths[name] = out / "checkpoint.pt"
    return paths
