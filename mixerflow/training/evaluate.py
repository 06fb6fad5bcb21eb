"""Bits per dimension of a model over a whole split, with its standard error: the figure
validation, the final test, ``mixerflow evaluate`` and ``compare`` report; and a
class-conditional model as a classifier of a split (``mixerflow classify``)."""

import math

import torch

from mixerflow.data.images import ImageSet
from mixerflow.models.flow import ImageFlow
from mixerflow.training.distributed import Distributed
from mixerflow.transforms.preprocess import bits_per_dim

EVAL_SEED = 12345  # fixed dequantization noise, so an evaluation can be repeated exactly


def evaluate_bpd(
    flow: ImageFlow, data: ImageSet, batch_size: int, seed: int = EVAL_SEED,
    world: Distributed | None = None, samples: int = 1,
) -> tuple[float, float]:
    """Mean bits/dim over every image of ``data`` and its standard error (fresh noise;
    :func:`image_bpd` says which, and what ``samples`` does). Under torchrun each rank
    takes every ``world_size``-th batch and the sums are all-reduced, giving the
    single-process figure."""
    world = world or Distributed()
    bpd = image_bpd(flow, data, batch_size, seed, world, samples)
    count, total, squares = world.sum([len(bpd), bpd.sum().item(), bpd.square().sum().item()])
    mean = total / count
    variance = max(squares - count * mean**2, 0.0) / (count - 1) if count > 1 else math.nan
    return mean, math.sqrt(variance / count)


@torch.no_grad()
def image_bpd(
    flow: ImageFlow, data: ImageSet, batch_size: int, seed: int = EVAL_SEED,
    world: Distributed | None = None, samples: int = 1,
) -> torch.Tensor:
    """Bits/dim of each image of ``data`` this rank evaluates, float64 ``(N,)`` (every image,
    in order, in one process).

    The noise of the batch starting at image ``i`` comes from seed ``seed + i``, so the
    values do not depend on how the batches are shared, and two models evaluated with one
    seed see the same noise (a paired comparison). ``samples = K > 1``: each image's
    importance-weighted bound on ``K`` draws of the noise,
    ``log mean_k p(x + u_k) / q(u_k | x)``, tighter than one draw's (Burda et al. 2016).
    A class-conditional flow is evaluated given each image's label: ``p(x | y)``.
    """
    world = world or Distributed()
    was_training = flow.training
    flow.eval()
    device = next(flow.parameters()).device
    values = [torch.zeros(0, dtype=torch.float64)]
    starts = range(0, len(data), batch_size)
    for start in starts[world.rank :: world.world_size]:
        batch = data.images[start : start + batch_size].to(device)
        labels = data.labels[start : start + batch_size] if flow.num_classes else None
        generator = torch.Generator().manual_seed(seed + start)
        draws = torch.stack([flow.log_prob(batch, generator=generator, labels=labels)
                             for _ in range(samples)])
        log_p = torch.logsumexp(draws, 0) - math.log(samples)  # one draw: its log_prob, exactly
        values.append(bits_per_dim(log_p, flow.num_dims).double().cpu())
    flow.train(was_training)
    return torch.cat(values)


@torch.no_grad()
def class_log_probs(flow: ImageFlow, data: ImageSet, batch_size: int,
                    seed: int = EVAL_SEED) -> torch.Tensor:
    """``log P(x | y)`` bounds in nats of every image of ``data`` under every class, float64
    ``(N, K)``, each batch's classes on one noise draw (seeded as :func:`image_bpd`'s)."""
    was_training = flow.training
    flow.eval()
    device = next(flow.parameters()).device
    parts = [torch.zeros(0, flow.num_classes, dtype=torch.float64)]
    for start in range(0, len(data), batch_size):
        batch = data.images[start : start + batch_size].to(device)
        generator = torch.Generator().manual_seed(seed + start)
        parts.append(flow.class_log_probs(batch, generator).double().cpu())
    flow.train(was_training)
    return torch.cat(parts)


def classification(scores: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor,
                   num_dims: int) -> dict:
    """The generative classifier ``argmax_y log p(x | y) + log p(y)`` of ``scores (N, K)``
    (:func:`class_log_probs`) against ``labels (N,)``: accuracy, bits/dim given the true
    class and of the class mixture ``p(x) = sum_y p(y) p(x | y)`` (a bound on the marginal,
    comparable with an unconditional model's), each with its standard error, and per class
    its count, accuracy and bits/dim given the class."""
    posterior = scores + log_prior
    correct = (posterior.argmax(1) == labels).double()
    given = bits_per_dim(scores.gather(1, labels[:, None]).squeeze(1), num_dims)
    mixture = bits_per_dim(torch.logsumexp(posterior, 1), num_dims)

    def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
        se = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else math.nan
        return values.mean().item(), se

    per_class = {}
    for label in range(scores.shape[1]):
        mine = labels == label
        if mine.any():
            per_class[label] = {"count": int(mine.sum()), "accuracy": correct[mine].mean().item(),
                                "bpd_given_class": given[mine].mean().item()}
    return {"accuracy": mean_and_se(correct)[0], "bpd_given_class": mean_and_se(given),
            "bpd_mixture": mean_and_se(mixture), "per_class": per_class}
