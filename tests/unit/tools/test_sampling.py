"""Sampling, reconstruction, interpolation and embeddings from trained checkpoints of
both models, through the Python API and the command line."""


import numpy as np
import pytest
import torch

from mixerflow import load_checkpoint
from mixerflow.cli import main
from mixerflow.tools.sampling import GRID_LIMIT, draw_samples, save_grid, slerp
from support import QUICKSTARTS


@pytest.mark.parametrize("name", QUICKSTARTS)
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


@pytest.mark.parametrize("name", QUICKSTARTS)
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


