"""Bits/dim of a whole split: the same figure however the batches are shared among processes."""

import math

import pytest
import torch

from flowcheck import perturb
from mixerflow import load_config, load_splits
from mixerflow.models import build_model
from mixerflow.training import distributed
from mixerflow.training.evaluate import EVAL_SEED, classification, evaluate_bpd, image_bpd
from support import SMALL


def test_sharded_evaluation_sums_to_the_single_process_figure():
    """Each rank's share of batches, summed, is the whole split: the figure of one process."""
    cfg = load_config(None, SMALL)
    test = load_splits(cfg.data).test
    flow = build_model(cfg.model, (1, 8, 8), 17)
    whole = evaluate_bpd(flow, test, 50)

    class Rank(distributed.Distributed):
        shares: list = []

        def sum(self, values):
            Rank.shares.append(values)
            return values

    parts = [evaluate_bpd(flow, test, 50, world=Rank(rank=r, world_size=3)) for r in range(3)]
    count, total, _ = (sum(column) for column in zip(*Rank.shares, strict=True))
    assert count == len(test) and len({p[0] for p in parts}) == 3
    assert total / count == pytest.approx(whole[0], abs=1e-9)


def test_k_draws_give_the_importance_weighted_bound_by_hand():
    """``samples=K``: each image's ``log mean_k p(x+u_k)/q(u_k|x)`` on the batch generator's
    next K draws; no looser than one draw's (Jensen), and K=1 is the one-draw figure."""
    cfg = load_config(None, [*SMALL, "model.dequantization=variational"])
    test = load_splits(cfg.data).test
    flow = perturb(build_model(cfg.model, (1, 8, 8), 17), 0.05).eval()
    one, _ = evaluate_bpd(flow, test, 500)
    three, _ = evaluate_bpd(flow, test, 500, samples=3)
    generator = torch.Generator().manual_seed(EVAL_SEED)  # the one batch starts at image 0
    with torch.no_grad():
        draws = torch.stack([flow.log_prob(test.images, generator=generator).double()
                             for _ in range(3)])
    by_hand = -(torch.logsumexp(draws, 0) - math.log(3)) / (64 * math.log(2))
    assert three == pytest.approx(by_hand.mean().item(), abs=1e-5)
    assert three < one
    assert one == pytest.approx(-(draws[0] / (64 * math.log(2))).mean().item(), abs=1e-6)


def test_per_image_values_give_the_figure_and_pair_two_models():
    """``image_bpd`` holds every image, in order, with the noise ``evaluate_bpd`` uses: their
    mean and standard error are its figure, and a second evaluation repeats them exactly, so
    two models evaluated with one seed and batch size are compared image by image."""
    cfg = load_config(None, SMALL)
    test = load_splits(cfg.data).test
    flow = perturb(build_model(cfg.model, (1, 8, 8), 17), 0.05)
    values = image_bpd(flow, test, 50)
    mean, se = evaluate_bpd(flow, test, 50)
    assert values.shape == (len(test),) and values.dtype == torch.float64
    assert values.mean().item() == pytest.approx(mean, abs=1e-9)
    assert values.std().item() / math.sqrt(len(test)) == pytest.approx(se, rel=1e-6)
    first = test.images[:50]
    generator = torch.Generator().manual_seed(EVAL_SEED)
    with torch.no_grad():
        by_hand = -flow.eval().log_prob(first, generator=generator).double() / (64 * math.log(2))
    assert torch.allclose(values[:50], by_hand, atol=1e-6)
    assert torch.equal(image_bpd(flow, test, 50), values)


def test_the_generative_classifier_and_its_bits_per_dim_by_hand():
    """Two images, two classes of prior 0.25 / 0.75, 4 dimensions: the posterior's argmax,
    the bits/dim given the true class and of the mixture, computed by hand."""
    scores = torch.tensor([[-10.0, -11.0], [-20.0, -19.5]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    log_prior = torch.log(torch.tensor([0.25, 0.75], dtype=torch.float64))
    report = classification(scores, labels, log_prior, num_dims=4)
    # image 0: -10 + log .25 = -11.386 loses to -11 + log .75 = -11.288; image 1 is a 1
    assert report["accuracy"] == 0.0
    bits = 4 * math.log(2)
    given = [10 / bits, 20 / bits]
    assert report["bpd_given_class"][0] == pytest.approx(sum(given) / 2)
    mixture = [-math.log(0.25 * math.exp(-10) + 0.75 * math.exp(-11)) / bits,
               -math.log(0.25 * math.exp(-20) + 0.75 * math.exp(-19.5)) / bits]
    assert report["bpd_mixture"][0] == pytest.approx(sum(mixture) / 2)
    assert report["bpd_mixture"][1] == pytest.approx(abs(mixture[0] - mixture[1]) / 2)
    assert report["per_class"] == {0: {"count": 2, "accuracy": 0.0,
                                       "bpd_given_class": pytest.approx(sum(given) / 2)}}
    uniform = classification(scores, labels, torch.log(torch.tensor([0.5, 0.5])), num_dims=4)
    assert uniform["accuracy"] == 0.5  # with a flat prior image 0 goes to its class
