"""Glow's learned prior as invertible steps (Kingma & Dhariwal 2018; ``openai/glow``'s
``split2d_prior`` and ``learntop``).

A Gaussian prior ``N(mean, exp(log_scale)^2)`` for a latent ``z`` equals a standard
normal prior for ``(z - mean) * exp(-log_scale)`` plus that map's log-det,
``-sum(log_scale)``. So the learned prior is written as the last step of a level, and the
flow's base stays ``N(0, 1)``. Sampling at temperature ``T`` draws the base with standard
deviation ``T``, which scales the learned prior's standard deviations by ``T`` around its
means, as ``openai/glow`` samples.
"""

import torch
from nflows.transforms.base import Transform
from torch import nn

from mixerflow.nn.classes import ClassEmbedding, guide
from mixerflow.nn.precision import to_float32


def _standardize(z: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, inverse: bool):
    """``(z - mean) / scale`` (or its inverse ``z * scale + mean``) and the log-det (B,)."""
    logdet = log_scale.expand_as(z).flatten(1).sum(1)
    if inverse:
        return z * torch.exp(log_scale) + mean, logdet
    return (z - mean) * torch.exp(-log_scale), -logdet


class SplitPrior(Transform):
    """``(B, C, H, W) -> (B, C, H, W)``: the first ``ceil(C/2)`` channels (those the
    multi-scale split sends to the base) standardised by a mean and log-scale that a
    zero-initialised 3x3 convolution computes from the other channels, which stay."""

    def __init__(self, channels: int):
        super().__init__()
        self.out_channels = (channels + 1) // 2
        self.conv = nn.Conv2d(channels - self.out_channels, 2 * self.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def _split_and_standardize(self, inputs: torch.Tensor, inverse: bool):
        out, stay = inputs.split([self.out_channels, inputs.shape[1] - self.out_channels], 1)
        # channels-last both ways: the same conv kernels in both directions (see ConvConditioner)
        stay_nhwc = stay.contiguous(memory_format=torch.channels_last)
        mean, log_scale = to_float32(self.conv(stay_nhwc)).chunk(2, dim=1)
        standardized, logdet = _standardize(out, mean, log_scale, inverse)
        return torch.cat([standardized, stay], dim=1), logdet

    def forward(self, inputs, context=None):
        return self._split_and_standardize(inputs, inverse=False)

    def inverse(self, inputs, context=None):
        return self._split_and_standardize(inputs, inverse=True)


class LearnedTop(Transform):
    """``(B, C, H, W) -> (B, C, H, W)``: the top level's latents standardised by a learned
    mean and log-scale per channel (``learntop``), zero at the start (the identity)."""

    def __init__(self, channels: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, inputs, context=None):
        return _standardize(inputs, self.mean, self.log_scale, inverse=False)

    def inverse(self, inputs, context=None):
        return _standardize(inputs, self.mean, self.log_scale, inverse=True)


class ClassPrior(Transform):
    """``(B, C, H, W) -> (B, C, H, W)``: the top level's latents standardised by a mean and
    log-scale per channel that a learned table gives each class (the class-conditional prior
    of the Glow paper, ``openai/glow``'s ``ycond``); zero at the start (the identity). Its
    context is class labels; a guided context guides the mean and log-scale."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.classes = ClassEmbedding(num_classes, 2 * channels, std=0.0)

    def _mean_and_log_scale(self, context) -> tuple[torch.Tensor, torch.Tensor]:
        params = guide(self.classes(context), context)[:, :, None, None]
        mean, log_scale = params.chunk(2, dim=1)
        return mean, log_scale

    def forward(self, inputs, context=None):
        return _standardize(inputs, *self._mean_and_log_scale(context), inverse=False)

    def inverse(self, inputs, context=None):
        return _standardize(inputs, *self._mean_and_log_scale(context), inverse=True)
