"""Flows of noisy images (model.dequantization: gaussian): the noise sits on the logit scale,
the objective is the density of the noisy images, and denoising is one step along the
flow's own score (Tweedie)."""

import pytest
import torch

from flowcheck import perturb
from mixerflow import load_config
from mixerflow.models import build_model
from support import TINY

SIGMA = 0.3


def noisy_flow(perturbed: bool = True):
    """A tiny MixerFlow of noisy images (σ = SIGMA), moved off the identity if ``perturbed``."""
    torch.manual_seed(0)
    cfg = load_config(None, [*TINY["mixerflow"], "model.patch_size=2",
                             "model.dequantization=gaussian", f"model.noise_std={SIGMA}"])
    flow = build_model(cfg.model, (1, 8, 8), 17).eval()
    return perturb(flow, 0.1) if perturbed else flow


def test_the_noise_moves_the_bins_centres_on_the_logit_scale():
    flow = noisy_flow()
    images = torch.randint(0, 17, (3, 1, 8, 8), dtype=torch.uint8)
    eps = torch.randn(images.shape)
    values = flow.noisy(images, eps)
    margin = 17 * 0.05 / 0.9  # the logit's domain: the pixel range and the alpha margin
    assert ((values > -margin) & (values < 17 + margin)).all()
    centres, _ = flow.preprocess(images.float() + 0.5)
    moved, _ = flow.preprocess(values)
    torch.testing.assert_close(moved - centres, SIGMA * eps, rtol=0, atol=1e-4)
    torch.testing.assert_close(flow.noisy(images, torch.zeros_like(eps)), images + 0.5)
    torch.testing.assert_close(flow.log_bound(images, eps), flow.log_density(values))
    assert flow.draw_noise(torch.zeros(20000, 1, 1, 1)).std() == pytest.approx(1, abs=0.03)


def test_denoising_a_standard_normal_density_shrinks_toward_its_mode():
    """A fresh flow is the identity, so its density in logit space is N(0, I), whose score
    is -y: Tweedie's step gives (1 - σ²) y exactly."""
    flow = noisy_flow(perturbed=False)
    y = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(flow.denoise(y), (1 - SIGMA**2) * y, rtol=0, atol=1e-6)


def test_the_denoising_step_is_sigma_squared_times_the_score():
    flow = noisy_flow().double()
    y = torch.randn(2, 1, 8, 8, dtype=torch.float64)

    def log_p(values: torch.Tensor) -> torch.Tensor:
        z, logdet = flow.transform(values)
        return flow.base.log_prob(z) + logdet

    step = flow.denoise(y) - y
    for index in [(0, 0, 1, 2), (1, 0, 5, 7)]:
        bump = torch.zeros_like(y)
        bump[index] = 1e-5
        slope = (log_p(y + bump) - log_p(y - bump))[index[0]] / 2e-5
        assert step[index].item() == pytest.approx(SIGMA**2 * slope.item(), rel=1e-5)


def test_denoised_samples_and_what_refuses_to_denoise():
    model_cfg = load_config(None, [*TINY["mixerflow"], "model.patch_size=2",
                                   "model.class_conditional=true",
                                   "model.dequantization=gaussian"]).model
    flow = build_model(model_cfg, (1, 8, 8), 17, num_classes=3).eval()
    assert model_cfg.noise_std is None and flow.noise_std == 0.1  # the default σ
    labels = torch.tensor([0, 1, 2])
    plain = flow.sample(3, 0.7, torch.Generator().manual_seed(0), labels=labels)
    denoised = flow.sample(3, 0.7, torch.Generator().manual_seed(0), labels=labels, denoise=True)
    assert denoised.dtype == torch.uint8 and not torch.equal(plain, denoised)
    uniform = build_model(load_config(None, [*TINY["mixerflow"], "model.patch_size=2"]).model,
                          (1, 8, 8), 17)
    with pytest.raises(ValueError, match="noisy images"):
        uniform.sample(2, denoise=True)
