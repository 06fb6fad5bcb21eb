import pytest
import torch

from flowcheck import assert_invertible, assert_logdet_matches_jacobian, perturb
from mixerflow.config import load_config
from mixerflow.errors import UserError
from mixerflow.models import MixerFlow, build_model

TINY = ["model.blocks=2", "model.channel_hidden=8", "model.patch_hidden=8", "model.num_bins=4"]

CONFIGS = [
    ((1, 4, 4), ["model.patch_size=2"]),
    ((3, 4, 4), ["model.patch_size=2"]),
    ((1, 4, 6), ["model.patch_size=2", "model.blocks=3"]),  # non-square, three blocks
    ((3, 4, 4), ["model.patch_size=2", "model.coupling=additive"]),
    ((1, 4, 4), ["model.patch_size=2", "model.coupling=rq-spline"]),
    ((3, 4, 4), ["model.patch_size=2", "model.coupling=rq-spline", "model.linear=permutation"]),
    ((1, 4, 4), ["model.patch_size=2", "model.shift=false", "model.couplings=3"]),
    ((1, 4, 4), ["model.patch_size=2", "model.position_context=true"]),
    ((3, 8, 8), ["model.patch_size=4", "model.position_context=true"]),
]


def tiny_flow(image_shape, overrides, num_levels=256):
    cfg = load_config(None, TINY + overrides)
    flow = build_model(cfg.model, image_shape, num_levels)
    return perturb(flow.eval(), scale=0.1)


@pytest.mark.parametrize("image_shape, overrides", CONFIGS)
def test_mixerflow_invertible_with_exact_logdet(image_shape, overrides):
    flow = tiny_flow(image_shape, overrides)
    y = 2 * torch.randn(3, *image_shape)  # logit-scale inputs
    assert_invertible(flow.transform, y, atol=1e-4)
    assert_logdet_matches_jacobian(flow.transform, y[:2], rtol=1e-4)


@pytest.mark.parametrize("image_shape, overrides", CONFIGS[:3])
def test_encode_decode_gives_the_images_back(image_shape, overrides):
    flow = tiny_flow(image_shape, overrides)
    images = torch.randint(0, 256, (4, *image_shape), dtype=torch.uint8)
    assert torch.equal(flow.decode(flow.encode(images)), images)


def test_fresh_mixerflow_is_the_identity():
    cfg = load_config(None, TINY + ["model.patch_size=2"])
    transform = MixerFlow.from_config(cfg.model, (3, 4, 4)).eval()
    y = torch.randn(2, 3, 4, 4)
    z, logdet = transform(y)
    assert torch.allclose(z, y, atol=1e-5)
    assert torch.allclose(logdet, torch.zeros(2), atol=1e-4)


def test_channel_mixing_weights_do_not_grow_with_the_number_of_patches():
    cfg = load_config(None, TINY + ["model.patch_size=2"])

    def channel_mixing_params(size):
        block = MixerFlow.from_config(cfg.model, (1, size, size)).blocks[0]
        return sum(p.numel() for p in block._transforms[1].transform.parameters())

    assert channel_mixing_params(4) == channel_mixing_params(16)


def test_shift_blocks_move_patch_borders():
    cfg = load_config(None, TINY + ["model.patch_size=2"])
    shifted = MixerFlow.from_config(cfg.model, (1, 4, 4))
    cfg.model.shift = False
    plain = MixerFlow.from_config(cfg.model, (1, 4, 4))
    assert len(shifted.blocks[1]._transforms) == len(plain.blocks[1]._transforms) + 2
    assert len(shifted.blocks[0]._transforms) == len(plain.blocks[0]._transforms)


@pytest.mark.parametrize(
    "image_shape, patch_size, message",
    [
        ((1, 8, 8), 3, "patch_size 3 does not divide the image size 8x8"),
        ((1, 8, 8), 8, "leaves a single patch"),
        ((1, 8, 8), 1, "patches hold a single value"),
    ],
)
def test_bad_patch_sizes_are_named(image_shape, patch_size, message):
    cfg = load_config(None, [f"model.patch_size={patch_size}"])
    with pytest.raises(UserError, match=message):
        build_model(cfg.model, image_shape, 256)
