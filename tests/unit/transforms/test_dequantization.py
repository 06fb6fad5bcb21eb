"""Variational dequantization: exact couplings, a density that is the inverse Jacobian of the
noise map, and a training bound that equals its hand computation."""

import math

import pytest
import torch
from nflows.transforms.base import Transform

from flowcheck import DEVICES, assert_exact_on, perturb
from mixerflow import load_config
from mixerflow.models import build_model
from mixerflow.transforms.dequantization import CheckerboardCoupling, VariationalDequantizer
from mixerflow.transforms.preprocess import bits_per_dim
from support import TINY

SHAPE = (2, 3, 3)  # two channels, an odd side: both checkerboards reach every channel
LEVELS = 5


class WithContext(Transform):
    """A coupling with its context fixed, for the checks every transform passes."""

    def __init__(self, coupling: CheckerboardCoupling, context: torch.Tensor):
        super().__init__()
        self.coupling, self.context = coupling, context

    def forward(self, inputs, context=None):
        return self.coupling(inputs, self._context(inputs))

    def inverse(self, inputs, context=None):
        return self.coupling.inverse(inputs, self._context(inputs))

    def _context(self, inputs):
        return self.context.to(inputs).expand(len(inputs), -1, -1, -1)


def dequantizer(seed: int = 0) -> VariationalDequantizer:
    torch.manual_seed(seed)
    return perturb(VariationalDequantizer(SHAPE, LEVELS, hidden=4, steps=3), 0.3, seed).double()


def draws(count: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, LEVELS, (count, *SHAPE), generator=generator, dtype=torch.uint8)
    return images, torch.rand((count, *SHAPE), generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("even", [True, False])
def test_a_checkerboard_coupling_is_exact(even, device):
    torch.manual_seed(0)
    coupling = perturb(CheckerboardCoupling(2, 3, 4, 3, 3, even), 0.3)
    assert_exact_on(device, WithContext(coupling, torch.randn(1, 3, 3, 3)), SHAPE)


def test_a_fresh_dequantizer_is_uniform_dequantization():
    torch.manual_seed(0)
    fresh = VariationalDequantizer(SHAPE, LEVELS, hidden=4, steps=2)
    images, u0 = draws()
    values, log_q = fresh(images, u0.float())
    torch.testing.assert_close(log_q, torch.zeros(3), rtol=0, atol=1e-5)  # float32 rounding
    torch.testing.assert_close(values, images.float() + u0.float(), rtol=0, atol=1e-6)


def noise_map(model: VariationalDequantizer, image: torch.Tensor):
    """``u0 -> u`` of one image, flat ``(D,) -> (D,)``."""
    def flat(u0):
        return model(image[None], u0.reshape(1, *SHAPE))[0].reshape(-1) - image.reshape(-1)
    return flat


def test_log_q_is_minus_the_log_det_of_the_noise_map():
    """``u0`` has density 1, so ``q(u | x) = 1 / |det ∂u/∂u0|``, by the brute-force Jacobian."""
    model = dequantizer()
    images, u0 = draws()
    values, log_q = model(images, u0)
    assert log_q.abs().min() > 1e-3  # perturbed: no longer uniform
    fractions = values - images.double()
    assert ((fractions >= 0) & (fractions <= 1)).all()  # each value stays in its bin
    for i in range(len(images)):
        jacobian = torch.autograd.functional.jacobian(noise_map(model, images[i].double()),
                                                      u0[i].reshape(-1))
        sign, log_det = torch.linalg.slogdet(jacobian)
        assert sign != 0
        assert log_q[i].item() == pytest.approx(-log_det.item(), rel=1e-6, abs=1e-9)


def test_the_bound_is_log_p_of_the_dequantized_image_plus_the_log_det_by_hand():
    """bits/dim = -(log p(x + u) + log|det ∂u/∂u0|) / (D log 2), u the dequantizer's map of
    the uniform draw ``u0``."""
    torch.manual_seed(0)
    cfg = load_config(None, [*TINY["mixerflow"], "model.patch_size=1",
                             "model.dequantization=variational", "model.dequant_hidden=4",
                             "model.dequant_steps=3"]).model
    flow = perturb(build_model(cfg, SHAPE, LEVELS), 0.1).double().eval()
    images, u0 = draws()
    dims = math.prod(SHAPE)
    bpd = bits_per_dim(flow.log_bound(images, u0), dims)
    for i in range(len(images)):
        image = images[i].double()
        flat = noise_map(flow.dequantizer, image)
        u = flat(u0[i].reshape(-1))
        log_p = flow.log_density((image.reshape(-1) + u).reshape(1, *SHAPE))[0]
        _, log_det = torch.linalg.slogdet(torch.autograd.functional.jacobian(
            flat, u0[i].reshape(-1)))
        by_hand = -(log_p + log_det).item() / (dims * math.log(2))
        assert bpd[i].item() == pytest.approx(by_hand, rel=1e-9)


def test_without_a_dequantizer_the_bound_is_log_p_at_x_plus_the_draw():
    torch.manual_seed(0)
    flow = build_model(load_config(None, [*TINY["mixerflow"], "model.patch_size=1"]).model,
                       SHAPE, LEVELS)
    images, u0 = draws()
    assert flow.dequantizer is None
    assert torch.equal(flow.log_bound(images, u0.float()),
                       flow.log_density(images.float() + u0.float()))
