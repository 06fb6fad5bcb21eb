"""Sampling, reconstruction, interpolation and embeddings from trained checkpoints of
both models, through the Python API and the command line."""

import json

import numpy as np
import pytest
import torch
from test_cli import ROOT

from mixerflow import load_checkpoint, load_config, train
from mixerflow.cli import main
from mixerflow.data.splits import load_splits
from mixerflow.tools.embedding import embed_splits
from mixerflow.tools.probe import probe
from mixerflow.tools.sampling import GRID_LIMIT, draw_samples, save_grid, slerp

MODELS = {"mixerflow": "quickstart.yaml", "glow": "quickstart_glow.yaml"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    """A briefly trained digits checkpoint of each model."""
    paths = {}
    for name, config in MODELS.items():
        out = tmp_path_factory.mktemp(name)
        cfg = load_config(ROOT / "configs" / config,
                          ["train.steps=150", "log.num_samples=4", f"log.out_dir={out}"])
        train(cfg, show_progress=False)
        paths[name] = out / "checkpoint.pt"
    return paths


@pytest.mark.parametrize("name", MODELS)
def test_samples_are_valid_images_reproducible_from_the_seed(checkpoints, name):
    flow = load_checkpoint(checkpoints[name])
    first = draw_samples(flow, 10, 0.7, batch_size=4, seed=3)
    assert first.dtype == torch.uint8 and first.shape == (10, 1, 8, 8)
    assert int(first.max()) < flow.num_levels
    assert torch.equal(first, draw_samples(flow, 10, 0.7, batch_size=10, seed=3))
    assert not torch.equal(first, draw_samples(flow, 10, 0.7, batch_size=4, seed=4))
    zero = flow.decode(torch.zeros(1, 1, 8, 8))
    assert torch.equal(draw_samples(flow, 3, 0.0, batch_size=2, seed=0), zero.expand(3, -1, -1, -1))


def test_a_grid_shows_at_most_grid_limit_images(tmp_path):
    from PIL import Image

    many, limit = tmp_path / "many.png", tmp_path / "limit.png"
    save_grid(torch.zeros(GRID_LIMIT * 50, 1, 8, 8, dtype=torch.uint8), 17, many)
    save_grid(torch.zeros(GRID_LIMIT, 1, 8, 8, dtype=torch.uint8), 17, limit)
    assert Image.open(many).size == Image.open(limit).size


@pytest.mark.parametrize("name", MODELS)
def test_sample_command_writes_grids_npy_reconstruction_and_interpolation(
    checkpoints, name, tmp_path, capsys
):
    out = tmp_path / "grid.png"
    main(["sample", "--checkpoint", str(checkpoints[name]), "--n", "6", "--temperature",
          "0.5,1", "--npy", "--reconstruct", "300", "--interpolate", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "reconstruction of 300 test images: max pixel error 0 " in printed
    for suffix in ("_t0.5.png", "_t1.png", "_reconstruct.png", "_interpolate.png"):
        assert (tmp_path / f"grid{suffix}").stat().st_size > 0
    assert np.load(tmp_path / "grid_t0.5.npy").shape == (6, 1, 8, 8)


def test_slerp_ends_at_its_endpoints_and_stays_on_the_sphere():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    path = slerp(a, b, 5)
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    assert torch.allclose(path.norm(dim=1), torch.ones(5), atol=1e-6)


EMBED_OPTIONS = {
    "mixerflow": [("z", "none", 64), ("block:2", "none", 64), ("z", "mean_patches", 4),
                  ("block:1", "mean_channels", 16)],
    "glow": [("z", "none", 64), ("level:1", "none", 32), ("level:2", "none", 32),
             ("z", "per_level", 10)],
}


@pytest.mark.parametrize("name", MODELS)
def test_embedding_shapes_and_determinism(checkpoints, name):
    flow = load_checkpoint(checkpoints[name])
    images = torch.randint(0, 17, (5, 1, 8, 8), dtype=torch.uint8)
    for layer, pool, features in EMBED_OPTIONS[name]:
        embedding = flow.embed(images, layer, pool)
        assert embedding.shape == (5, features), (layer, pool)
        assert torch.equal(embedding, flow.embed(images, layer, pool))
    assert torch.equal(flow.embed(images), flow.encode(images).reshape(5, -1))


def test_a_probe_on_digits_embeddings_beats_chance_widely(checkpoints):
    flow = load_checkpoint(checkpoints["mixerflow"])
    arrays = embed_splits(flow, load_splits(flow.config.data), "block:2", "none")
    result = probe(arrays, c_grid=(0.1,))
    assert result["chance"] < 0.2
    assert result["test_accuracy"] > 0.7


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
