"""Bits/dim accounting against hand computations and exact anchors."""

import math

import pytest
import torch
from nflows.transforms.base import CompositeTransform, InverseTransform, Transform
from nflows.transforms.standard import IdentityTransform

from flowcheck import assert_invertible, assert_logdet_matches_jacobian
from mixerflow.models.flow import ImageFlow
from mixerflow.transforms.preprocess import Logit, bits_per_dim


class NormalQuantile(Transform):
    """``u ∈ (0,1) -> Φ⁻¹(u)``: maps a uniform density on the unit cube to N(0, I)."""

    def forward(self, inputs, context=None):
        z = torch.special.ndtri(inputs)
        log_normal = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
        return z, -log_normal.reshape(len(z), -1).sum(1)

    def inverse(self, inputs, context=None):
        raise NotImplementedError


@pytest.mark.parametrize("num_levels", [2, 17, 256])
def test_uniform_model_scores_exactly_log2_levels(num_levels):
    # Undo the logit, then the normal quantile: the model density on [0,1)^D is 1.
    uniform = CompositeTransform([InverseTransform(Logit(0.05)), NormalQuantile()])
    flow = ImageFlow(uniform, (1, 4, 4), num_levels).double()
    images = torch.randint(0, num_levels, (16, 1, 4, 4))
    bpd = flow.bpd(images)
    assert torch.allclose(bpd, torch.full_like(bpd, math.log2(num_levels)), atol=1e-6)


def test_identity_flow_bpd_equals_hand_computation():
    alpha, levels = 0.05, 17
    flow = ImageFlow(IdentityTransform(), (1, 2, 2), levels, alpha=alpha)
    images = torch.tensor([[[[0, 5], [16, 9]]]])
    x = [0, 5, 16, 9]
    total = 0.0  # log p(v) in nats, term by term
    for value in x:
        s = alpha + (1 - 2 * alpha) * (value + 0.5) / levels
        y = math.log(s / (1 - s))
        total += -0.5 * y**2 - 0.5 * math.log(2 * math.pi)  # standard normal base
        total += math.log(1 - 2 * alpha) - math.log(s) - math.log(1 - s)  # logit
        total += -math.log(levels)  # [0, K) -> [0, 1)
    expected = -total / (4 * math.log(2))
    assert flow.bpd(images, noise="midpoint").item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_after_logit_is_worse_than_uniform():
    # i.i.d. N(0,1) on the logit scale scores about 8.2 bits/dim on uniform 8-bit data;
    # the exact uniform model scores 8. The per-image spread is ~0.1, the mean's ~0.003.
    flow = ImageFlow(IdentityTransform(), (1, 8, 8), 256)
    images = torch.randint(0, 256, (1024, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert flow.bpd(images).mean().item() > 8 + 0.1


def test_bits_per_dim_converts_nats():
    assert bits_per_dim(torch.tensor([-math.log(2) * 12]), 3).item() == pytest.approx(4.0)


def test_uniform_dequantization_bound_is_seeded():
    flow = ImageFlow(IdentityTransform(), (1, 2, 2), 256)
    images = torch.randint(0, 256, (3, 1, 2, 2))
    a = flow.bpd(images, generator=torch.Generator().manual_seed(1))
    b = flow.bpd(images, generator=torch.Generator().manual_seed(1))
    c = flow.bpd(images, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_logit_is_invertible_with_exact_logdet():
    inputs = torch.rand(3, 2, 2, 2)
    assert_invertible(Logit(0.05), inputs, atol=1e-5)
    assert_logdet_matches_jacobian(Logit(0.05), inputs)
