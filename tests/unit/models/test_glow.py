"""The Glow baseline obeys the same Transform contract as MixerFlow."""

import pytest
import torch

from flowcheck import DEVICES, assert_exact_on, perturb
from mixerflow.core.errors import UserError
from mixerflow.models import Glow, build_model
from mixerflow.training.config import load_config
from support import TINY

CONFIGS = [
    ((1, 4, 4), 1, "affine"),
    ((3, 4, 4), 1, "affine"),
    ((1, 4, 4), 2, "affine"),
    ((3, 4, 4), 2, "affine"),
    ((1, 8, 8), 3, "affine"),
    ((3, 8, 8), 3, "affine"),
    ((1, 4, 8), 2, "additive"),  # non-square
    ((3, 4, 4), 2, "rq-spline"),
]


def glow_config(levels: int, coupling: str = "affine", extra=()):
    return load_config(None, [*TINY["glow"], f"model.levels={levels}", f"model.coupling={coupling}",
                              *extra]).model


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("image_shape, levels, coupling", CONFIGS)
def test_glow_invertible_with_exact_logdet(image_shape, levels, coupling, device):
    flow = build_model(glow_config(levels, coupling), image_shape, 256)
    assert_exact_on(device, perturb(flow.eval(), scale=0.1).transform, image_shape)


PRIOR = ["model.learned_prior=true"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("image_shape, levels", [((3, 4, 4), 1), ((3, 4, 4), 2), ((1, 8, 8), 3)])
def test_glow_with_the_learned_prior_is_invertible_with_exact_logdet(image_shape, levels, device):
    flow = build_model(glow_config(levels, extra=PRIOR), image_shape, 256)
    assert_exact_on(device, perturb(flow.eval(), scale=0.1).transform, image_shape)


def test_a_fresh_learned_prior_scores_as_the_fixed_one_and_adds_only_its_own_weights():
    with_prior = build_model(glow_config(3, extra=PRIOR), (1, 8, 8), 256)
    without = build_model(glow_config(3), (1, 8, 8), 256)
    incompatible = without.load_state_dict(with_prior.state_dict(), strict=False)
    assert not incompatible.missing_keys
    # two split priors (conv weight and bias) and the top's mean and log-scale
    assert len(incompatible.unexpected_keys) == 6
    values = torch.rand(4, 1, 8, 8) * 255
    with torch.no_grad():
        assert torch.allclose(with_prior.eval().log_density(values),
                              without.eval().log_density(values), atol=1e-4)


def test_each_convolution_sees_one_memory_layout_in_both_directions():
    """cuDNN chooses kernels by layout, and in TF32 (its CUDA float32 default) two kernels
    differ by ~1e-3: a conditioner fed channels-last one way and contiguous the other made
    Glow's inverse inexact on a GPU."""
    flow = perturb(build_model(glow_config(2), (3, 8, 8), 256).eval(), scale=0.1)
    layouts = {"forward": {}, "inverse": {}}
    direction = "forward"

    def record(name: str, inputs: torch.Tensor) -> None:
        layouts[direction].setdefault(name, inputs.stride())

    for name, module in flow.transform.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_pre_hook(lambda _, args, name=name: record(name, args[0]))
    with torch.no_grad():
        outputs, _ = flow.transform(torch.randn(4, 3, 8, 8))
        direction = "inverse"
        flow.transform.inverse(outputs)
    assert len(layouts["forward"]) > 0
    assert layouts["forward"] == layouts["inverse"]


def test_fresh_glow_preserves_volume_and_decodes_exactly():
    flow = build_model(glow_config(2), (3, 8, 8), 256).eval()
    _, logdet = flow.transform(torch.randn(2, 3, 8, 8))
    assert torch.allclose(logdet, torch.zeros(2), atol=1e-4)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(flow.decode(flow.encode(images)), images)


def test_a_decode_that_overflows_says_how_many_images_it_lost(capsys):
    flow = build_model(glow_config(2), (3, 8, 8), 256).eval()
    latents = torch.zeros(3, 3, 8, 8)
    flow.decode(latents)
    assert capsys.readouterr().err == ""
    latents[1:, 0, 0, 0] = float("inf")  # as a GPU's sampling overflowed (black grid)
    images = flow.decode(latents)
    err = capsys.readouterr().err
    assert err.startswith("warning: 2 of 3 decoded images hold non-finite values")
    assert images.dtype == torch.uint8 and torch.equal(images[0], flow.decode(latents[:1])[0])


def test_levels_split_the_latents_multiscale():
    glow = Glow.from_config(glow_config(3), (1, 8, 8))
    assert glow.level_shapes == [(2, 4, 4), (4, 2, 2), (16, 1, 1)]
    latents = torch.randn(5, 1, 8, 8)
    parts = glow.split_levels(latents)
    assert [tuple(p.shape[1:]) for p in parts] == glow.level_shapes
    assert torch.equal(torch.cat([p.reshape(5, -1) for p in parts], dim=1),
                       latents.reshape(5, -1))


def test_too_many_levels_for_the_image_is_a_user_error():
    with pytest.raises(UserError, match="divisible by 8; got 28x28"):
        Glow.from_config(glow_config(3), (1, 28, 28))
