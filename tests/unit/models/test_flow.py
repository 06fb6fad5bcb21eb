"""data.permute_pixels: one fixed pixel permutation for every image, inside the flow's
preprocessing, so a model sees permuted images and its samples come back un-permuted."""

import torch

from flowcheck import assert_invertible, perturb
from mixerflow import load_checkpoint, load_config
from mixerflow.models import build_model
from mixerflow.training.checkpoint import save_checkpoint
from mixerflow.transforms.patches import PermutePixels
from support import TINY


def test_the_permutation_is_a_seeded_bijection_of_positions_shared_by_channels():
    permute = PermutePixels((3, 4, 5), seed=7)
    assert torch.equal(permute.order.sort().values, torch.arange(20))
    assert torch.equal(permute.order, PermutePixels((3, 4, 5), seed=7).order)
    assert not torch.equal(permute.order, PermutePixels((3, 4, 5), seed=8).order)
    images = torch.arange(3 * 20.0).reshape(1, 3, 4, 5)
    moved, logdet = permute(images)
    for channel in range(3):  # every channel moves its pixels the same way
        assert torch.equal(moved[0, channel].flatten() - 20 * channel, permute.order.float())
    assert torch.equal(logdet, torch.zeros(1))
    assert_invertible(permute, torch.randn(2, 3, 4, 5), atol=0)


def test_a_permuted_model_is_the_plain_model_on_permuted_images(tmp_path):
    for kind in ([*TINY["mixerflow"], "model.patch_size=2"], [*TINY["glow"], "model.levels=2"]):
        cfg = load_config(None, [*kind, "data.permute_pixels=3"])
        permuted = perturb(build_model(cfg.model, (1, 8, 8), 17, 3).eval(), scale=0.1)
        plain = build_model(cfg.model, (1, 8, 8), 17).eval()
        plain.load_state_dict(permuted.state_dict())
        order = PermutePixels((1, 8, 8), 3)
        images = torch.randint(0, 17, (4, 1, 8, 8), dtype=torch.uint8)
        shuffled = order(images.float())[0].to(torch.uint8)
        assert torch.allclose(permuted.log_prob(images, "midpoint"),
                              plain.log_prob(shuffled, "midpoint"), atol=1e-4)
        latents = torch.randn(4, 1, 8, 8)
        unshuffled = order.inverse(plain.decode(latents).float())[0].to(torch.uint8)
        assert torch.equal(permuted.decode(latents), unshuffled)  # samples: un-permuted
        save_checkpoint(tmp_path / "c.pt", permuted, cfg)
        again = load_checkpoint(tmp_path / "c.pt")
        assert torch.equal(again.log_prob(images, "midpoint"), permuted.log_prob(images,
                                                                                 "midpoint"))
