"""Class-conditional flows, every kind: each class's density is an exact flow, the labels
change it, the classes' densities share one noise draw, and guided sampling at W = 0 is
plain conditional sampling."""

import copy

import pytest
import torch

from flowcheck import assert_exact_on, perturb
from mixerflow import load_config
from mixerflow.core.errors import UserError
from mixerflow.models import build_model
from support import TINY

CONDITIONAL = {  # the tiny model of every kind, class-conditional, on 1x8x8 images
    "mixerflow": [*TINY["mixerflow"], "model.patch_size=2", "model.position_context=true"],
    "mixerflow-kan": [*TINY["mixerflow"], "model.patch_size=2", "model.conditioner=kan"],
    "mixerflow-maf": [*TINY["mixerflow"], "model.patch_size=2", "model.channel_mixing=maf"],
    "mixerflow-spline": [*TINY["mixerflow"], "model.patch_size=2", "model.coupling=rq-spline"],
    "glow": [*TINY["glow"], "model.levels=2", "model.learned_prior=true"],
    "tarflow": [*TINY["tarflow"], "model.patch_size=2"],
    "jet": [*TINY["jet"], "model.patch_size=2"],
    "jet-mlp": [*TINY["jet"], "model.patch_size=2", "model.token_mixing=mlp"],
}
CLASSES = 3


def conditional_flow(name: str, seed: int = 0):
    """The tiny class-conditional model ``name``, its weights moved off the identity."""
    torch.manual_seed(seed)
    cfg = load_config(None, [*CONDITIONAL[name], "model.class_conditional=true"])
    return perturb(build_model(cfg.model, (1, 8, 8), 17, num_classes=CLASSES), 0.1).eval()


@pytest.mark.parametrize("name", CONDITIONAL)
def test_each_class_density_is_an_exact_flow_that_the_label_changes(name):
    flow = conditional_flow(name)
    labels = torch.tensor([0, 2, CLASSES])  # two classes and the no-class token
    assert_exact_on(torch.device("cpu"), copy.deepcopy(flow.transform), (1, 8, 8),
                    context=labels)
    images = torch.randint(0, 17, (2, 1, 8, 8), dtype=torch.uint8)
    by_class = flow.class_log_probs(images, generator=torch.Generator().manual_seed(1))
    assert by_class.shape == (2, CLASSES)
    assert (by_class[:, 1:] - by_class[:, :1]).abs().min() > 1e-3  # the label matters
    for label in range(CLASSES):  # every column on the same noise draw as log_prob's
        alone = flow.log_prob(images, generator=torch.Generator().manual_seed(1),
                              labels=torch.full((2,), label))
        torch.testing.assert_close(by_class[:, label], alone, rtol=0, atol=1e-4)
    no_class = flow.log_prob(images, "midpoint")  # labels=None: the no-class token
    torch.testing.assert_close(no_class, flow.log_prob(
        images, "midpoint", labels=torch.full((2,), CLASSES)), rtol=0, atol=0)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_guidance_zero_is_conditional_sampling_and_guidance_moves_samples(name):
    flow = conditional_flow(name)
    labels = torch.tensor([0, 1, 2, 1])

    def draw(**kwargs) -> torch.Tensor:
        return flow.sample(4, 0.7, torch.Generator().manual_seed(2), labels=labels, **kwargs)

    plain = draw()
    assert torch.equal(draw(guidance=0.0), plain)
    assert not torch.equal(draw(guidance=3.0), plain)
    latents = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    images = flow.decode(latents, labels)  # a conditional sample is its class's encoding
    assert torch.equal(flow.decode(latents, labels, guidance=0.0), images)


def test_an_unconditional_flow_refuses_labels_and_unknown_kinds_refuse_classes():
    flow = build_model(load_config(None, [*TINY["mixerflow"], "model.patch_size=2"]).model,
                       (1, 8, 8), 17)
    with pytest.raises(ValueError, match="unconditional"):
        flow.sample(2, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        flow.class_log_probs(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(UserError, match="label_drop.*class-conditional"):
        load_config(None, ["model.label_drop=0.2"])
    with pytest.raises(UserError, match="label_drop"):
        load_config(None, ["model.class_conditional=true", "model.label_drop=1"])
