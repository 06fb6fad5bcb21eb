"""Glow's learned prior written as invertible steps: exact inverse and log-det, the
Gaussian it stands for computed by hand, and the identity at initialisation."""

import pytest
import torch

from flowcheck import DEVICES, assert_exact_on, perturb
from mixerflow.transforms.prior import LearnedTop, SplitPrior

SHAPES = [(4, 4, 4), (3, 2, 4), (8, 2, 2)]  # an odd channel count sends ceil(C/2) out


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", [SplitPrior, LearnedTop])
def test_prior_steps_are_invertible_with_exact_logdet(kind, shape, device):
    assert_exact_on(device, perturb(kind(shape[0]), scale=0.3), shape)


@pytest.mark.parametrize("kind", [SplitPrior, LearnedTop])
def test_fresh_prior_steps_are_the_identity(kind):
    inputs = torch.randn(2, 4, 4, 4)
    outputs, logdet = kind(4)(inputs)
    assert torch.equal(outputs, inputs) and torch.equal(logdet, torch.zeros(2))


def test_the_split_prior_is_the_gaussian_its_convolution_predicts():
    """N(0, 1) on the output plus the log-det = N(mean, scale^2) on the split-off channels,
    with mean and log-scale from the convolution of the channels that stay (and the staying
    channels scored by the base as they are)."""
    prior = perturb(SplitPrior(4), scale=0.3)
    inputs = torch.randn(3, 4, 4, 4)
    outputs, logdet = prior(inputs)
    out, stay = inputs[:, :2], inputs[:, 2:]
    mean, log_scale = prior.conv(stay).chunk(2, dim=1)
    by_hand = torch.distributions.Normal(mean, log_scale.exp()).log_prob(out).flatten(1).sum(1)
    by_hand = by_hand + standard_normal_log_density(stay)
    assert torch.allclose(standard_normal_log_density(outputs) + logdet, by_hand, atol=1e-4)
    assert torch.equal(outputs[:, 2:], stay)


def test_sampling_at_temperature_scales_the_learned_standard_deviations():
    """As openai/glow samples: z = mean + T * scale * eps."""
    top = perturb(LearnedTop(4), scale=0.3)
    eps = torch.randn(2, 4, 2, 2)
    for temperature in (0.0, 0.7, 1.0):
        z, _ = top.inverse(temperature * eps)
        expected = top.mean + temperature * top.log_scale.exp() * eps
        assert torch.allclose(z, expected, atol=1e-6)
