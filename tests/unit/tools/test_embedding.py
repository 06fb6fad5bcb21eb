"""Embeddings of trained checkpoints of both kinds, and probes on them (Python API and
command line)."""

import json

import numpy as np
import pytest
import torch

from mixerflow import load_checkpoint
from mixerflow.cli import main
from support import QUICKSTARTS

EMBED_OPTIONS = {
    "mixerflow": [("z", "none", 64), ("block:2", "none", 64), ("z", "mean_patches", 4),
                  ("block:1", "mean_channels", 16)],
    "glow": [("z", "none", 64), ("level:1", "none", 32), ("level:2", "none", 32),
             ("z", "per_level", 10)],
}


@pytest.mark.parametrize("name", QUICKSTARTS)
def test_embedding_shapes_and_determinism(checkpoints, name):
    flow = load_checkpoint(checkpoints[name])
    images = torch.randint(0, 17, (5, 1, 8, 8), dtype=torch.uint8)
    for layer, pool, features in EMBED_OPTIONS[name]:
        embedding = flow.embed(images, layer, pool)
        assert embedding.shape == (5, features), (layer, pool)
        assert torch.equal(embedding, flow.embed(images, layer, pool))
    assert torch.equal(flow.embed(images), flow.encode(images).reshape(5, -1))


def test_embed_and_probe_commands_with_the_pixel_baseline(checkpoints, tmp_path, capsys):
    out = tmp_path / "embeddings.npz"
    main(["embed", "--checkpoint", str(checkpoints["glow"]), "--layer", "level:2",
          "--no-progress", "--out", str(out)])
    stored = np.load(out)
    assert stored["train_x"].shape == (1300, 32) and stored["test_y"].shape == (360,)
    main(["probe", "--embeddings", str(out), "--baseline", "pixels", "--json",
          str(tmp_path / "probe.json")])
    results = json.loads((tmp_path / "probe.json").read_text())
    assert results["settings"]["layer"] == "level:2"
    assert results["raw pixels"]["test_accuracy"] > 0.8
    assert "glow level:2/none: test accuracy" in capsys.readouterr().out
