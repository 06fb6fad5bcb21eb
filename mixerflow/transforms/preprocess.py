"""Dequantization + logit as nflows Transforms, and the bits-per-dim accounting.

Images hold integers ``x`` in ``{0, …, K-1}`` (``K = 2^n`` levels, or 17 for the
scikit-learn digits). Training sees ``v = x + u`` with ``u ~ U[0,1)^D``;
:class:`ScaleToUnit` maps ``v`` to ``x̃ = v / K`` in ``[0,1)^D`` with log-det
``-D·log K``, so a flow's ``log p(v)`` is directly the standard lower bound on the
discrete log-likelihood ``log P(x)``, and ``bpd = -log p / (D·log 2)``.
"""

import math

import torch
from nflows.transforms.base import Transform
from nflows.utils.torchutils import sum_except_batch

NOISE_KINDS = ("uniform", "midpoint")


def dequantize(
    images: torch.Tensor,
    noise: str = "uniform",
    generator: torch.Generator | None = None,
    part: tuple[int, int] = (0, 1),
) -> torch.Tensor:
    """Integer images ``(B, C, H, W)`` -> float ``x + u`` with ``u ~ U[0,1)`` or ``u = 1/2``
    (``generator`` and ``part``: as :func:`uniform_noise`)."""
    values = images.float()
    if noise == "midpoint":
        return values + 0.5
    if noise != "uniform":
        raise ValueError(f"unknown noise {noise!r}; choose one of {', '.join(NOISE_KINDS)}")
    return values + uniform_noise(images, generator, part)


def uniform_noise(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    part: tuple[int, int] = (0, 1),
) -> torch.Tensor:
    """``u ~ U[0,1)`` of the shape of ``images (B, C, H, W)``, float32 on their device.

    The noise is drawn on ``generator``'s device (a CPU generator gives the same values
    on any device; a CUDA one keeps training free of host-to-device copies), or from the
    global generator of the images' device. ``part=(i, n)``: the images are part ``i`` of
    ``n`` equal parts of a global batch; the noise of the whole batch is drawn and part
    ``i`` kept, so an image's noise does not depend on how many processes share the batch.
    """
    return _draw(torch.rand, images, generator, part)


def gaussian_noise(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    part: tuple[int, int] = (0, 1),
) -> torch.Tensor:
    """``ε ~ N(0, 1)`` of the shape of ``images``, drawn as :func:`uniform_noise` draws."""
    return _draw(torch.randn, images, generator, part)


def _draw(sampler, images: torch.Tensor, generator: torch.Generator | None,
          part: tuple[int, int]) -> torch.Tensor:
    """``sampler``'s values for part ``part`` of a global batch of ``images``' shape."""
    where = generator.device if generator is not None else images.device
    index, parts = part
    count = images.shape[0]
    values = sampler((parts * count, *images.shape[1:]), generator=generator, device=where)
    return values[index * count : (index + 1) * count].to(images.device)


def bits_per_dim(log_prob: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Per-example bits/dim from a discrete log-likelihood (bound) in nats, shape ``(B,)``."""
    return -log_prob / (num_dims * math.log(2))


class ScaleToUnit(Transform):
    """``v ∈ [0, K)^D -> v / K ∈ [0, 1)^D``; log-det ``-D·log K`` (the volume of one bin)."""

    def __init__(self, num_levels: int):
        super().__init__()
        self.num_levels = num_levels

    def _logabsdet(self, inputs: torch.Tensor) -> torch.Tensor:
        dims = inputs[0].numel()
        return inputs.new_full((inputs.shape[0],), -dims * math.log(self.num_levels))

    def forward(self, inputs, context=None):
        return inputs / self.num_levels, self._logabsdet(inputs)

    def inverse(self, inputs, context=None):
        return inputs * self.num_levels, -self._logabsdet(inputs)


class Logit(Transform):
    """``x̃ ∈ [0,1) -> y = logit(α + (1 - 2α) x̃)``, elementwise.

    Log-det ``Σ [log(1 - 2α) - log s - log(1 - s)]`` with ``s = α + (1 - 2α) x̃``;
    the α margin keeps the logit finite at the edges of the unit cube.
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, inputs, context=None):
        s = self.alpha + (1 - 2 * self.alpha) * inputs
        outputs = torch.log(s) - torch.log1p(-s)
        elementwise = math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)
        return outputs, sum_except_batch(elementwise)

    def inverse(self, inputs, context=None):
        s = torch.sigmoid(inputs)
        outputs = (s - self.alpha) / (1 - 2 * self.alpha)
        # d s / d y = s (1 - s); the inverse log-det is minus the forward one.
        elementwise = torch.nn.functional.logsigmoid(inputs) + torch.nn.functional.logsigmoid(
            -inputs
        ) - math.log(1 - 2 * self.alpha)
        return outputs, sum_except_batch(elementwise)
