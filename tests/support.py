"""What the tests share: paths, tiny models of every kind, a small digits run, and helpers
for processes and damaged files. Each test adds the overrides it is about."""

import gzip
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mixerflow.data.splits import load_splits
from mixerflow.models import build_model
from mixerflow.nn.conditioners import ConditionerSpec
from mixerflow.training.evaluate import evaluate_bpd
from mixerflow.training.step import initialize_actnorm
from mixerflow.transforms.coupling import CouplingSpec

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--no-progress"]
QUICKSTARTS = {"mixerflow": ROOT / "configs" / "quickstart.yaml",  # the digits pair of kinds
               "glow": ROOT / "configs" / "quickstart_glow.yaml"}
TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",  # for child processes
       "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}

# The smallest model of each kind with every part (8 wide); tests choose the patch size,
# levels and image shape they check.
TINY = {
    "mixerflow": ["model.kind=mixerflow", "model.blocks=2", "model.channel_hidden=8",
                  "model.patch_hidden=8", "model.num_bins=4"],
    "glow": ["model.kind=glow", "model.steps_per_level=2", "model.hidden_channels=8",
             "model.num_bins=4"],
    "tarflow": ["model.kind=tarflow", "model.blocks=2", "model.width=8", "model.heads=2"],
    "jet": ["model.kind=jet", "model.couplings=3", "model.pattern=channels,spatial",
            "model.width=8", "model.heads=2"],
}
# A MixerFlow run on the digits that learns in seconds.
SMALL = [
    "data.name=digits", "data.val_size=137", "model.patch_size=2", "model.blocks=2",
    "model.channel_hidden=32", "model.patch_hidden=32", "train.batch_size=64",
    "train.lr=0.002", "train.warmup_steps=20", "train.eval_every=100",
    "train.init_batch_size=500", "log.num_samples=4",
]


def coupling_spec(kind: str = "affine", context_features: int = 0) -> CouplingSpec:
    """Couplings of ``kind`` with an MLP conditioner 8 wide (splines of 4 bins)."""
    return CouplingSpec(kind, num_bins=4, conditioner=ConditionerSpec(
        "mlp", hidden_features=8, context_features=context_features))


def untrained_test_bpd(cfg) -> float:
    """Test bits/dim of the model ``cfg`` describes, right after ActNorm's init."""
    splits = load_splits(cfg.data)
    torch.manual_seed(cfg.train.seed)
    flow = build_model(cfg.model, splits.image_shape, splits.num_levels)
    initialize_actnorm(flow, splits.train, cfg.train.init_batch_size, "cpu")
    return evaluate_bpd(flow, splits.test, cfg.train.eval_batch_size)[0]


def wait_for_step(metrics: Path, step: int, process: subprocess.Popen, limit: float = 300):
    """Block until ``metrics`` logs a training step >= ``step`` (or the process ends)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists():
            lines = [json.loads(line) for line in metrics.read_text().splitlines() if line]
            if any(r.get("step", 0) >= step and "train_bpd" in r for r in lines):
                return
        time.sleep(0.2)
    raise AssertionError(f"no step {step} in {metrics} (exit {process.poll()})")


def mnist_files(damage: str) -> Callable:
    """tmp/MNIST/raw with 2 images of 4x4 per split, damaged one way."""
    def make(tmp, world, monkeypatch):
        raw = tmp / "MNIST" / "raw"
        raw.mkdir(parents=True)
        header = {"images": b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (2, 4, 4)),
                  "labels": b"\x00\x00\x08\x01" + (2).to_bytes(4, "big")}
        for prefix in ("train", "t10k"):
            for kind, count, body in (("images", 3, bytes(32)), ("labels", 1, bytes(2))):
                data = header[kind] + body
                if damage == "truncated" and kind == "images":
                    data = data[:-3]
                if damage == "not idx":
                    data = b"<html>404 not found</html>"
                if damage == "labels count" and kind == "labels" and prefix == "t10k":
                    data = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes(3)
                (raw / f"{prefix}-{kind}-idx{count}-ubyte").write_bytes(data)
        if damage == "bad gzip":
            (raw / "train-images-idx3-ubyte").unlink()
            (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
        if damage == "linked":  # the test images are the train images, through a link
            (raw / "t10k-images-idx3-ubyte").unlink()
            (raw / "t10k-images-idx3-ubyte").symlink_to("train-images-idx3-ubyte")
        if damage == "truncated gzip":
            image_file = raw / "train-images-idx3-ubyte"
            packed = gzip.compress(image_file.read_bytes())
            image_file.unlink()
            (raw / "train-images-idx3-ubyte.gz").write_bytes(packed[:-8])
    return make
