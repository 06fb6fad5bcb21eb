"""Variational dequantization (Ho et al. 2019, Flow++): the noise ``u`` that fills each
integer bin comes from a learned conditional flow ``q(u | x)`` instead of ``U[0, 1)^D``.

A draw starts from the same uniform noise ``u0`` that plain dequantization adds, maps it
to the logistic ``ε = logit(u0)``, through checkerboard affine couplings conditioned on
features of the integer image ``x``, and back to ``(0, 1)`` by a sigmoid:

    u = sigmoid(f(logit(u0); x)),    log q(u | x) = -log |det ∂u / ∂u0|

since ``u0`` has density 1. The couplings start as the identity, so a fresh dequantizer is
uniform dequantization (``log q = 0`` and ``u = u0``, up to float32 rounding). The training
objective ``log p(x + u) - log q(u | x)`` is a lower bound on ``log P(x)`` for any ``q``.
"""

import torch
from nflows.transforms.base import CompositeTransform, Transform
from torch import nn
from torch.nn import functional as F

from mixerflow.nn.conditioners import ConvConditioner
from mixerflow.transforms.coupling import bounded_scale

# gaussian: no dequantization but noise added on the logit scale (ImageFlow.noise_std)
DEQUANTIZATIONS = ("uniform", "variational", "gaussian")
# u0 is a float32 draw from [0, 1): kept one float32 step inside (0, 1) so logit(u0) is finite
_EDGE = 2.0**-24


def checkerboard(height: int, width: int, even: bool) -> torch.Tensor:
    """``(1, 1, H, W)``: 1 on the pixels a coupling transforms, alternating like a chess board."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return ((rows + cols) % 2 == int(not even)).float()[None, None]


class CheckerboardCoupling(Transform):
    """``(B, C, H, W) -> (B, C, H, W)`` given ``context (B, F, H, W)``: the pixels the mask
    marks get ``v * scale + shift`` from a conv net on the other pixels and the context
    (Glow's bounded scale; zero-initialised, so the identity at the start)."""

    def __init__(self, channels: int, context_channels: int, hidden_channels: int,
                 height: int, width: int, even: bool):
        super().__init__()
        self.register_buffer("mask", checkerboard(height, width, even), persistent=False)
        self.net = ConvConditioner(channels + context_channels, 2 * channels, hidden_channels)

    def _scale_and_shift(self, kept: torch.Tensor, context: torch.Tensor):
        shift, unconstrained = self.net(torch.cat([kept, context], dim=1)).chunk(2, dim=1)
        return bounded_scale(unconstrained), shift

    def forward(self, inputs, context=None):
        kept = inputs * (1 - self.mask)
        scale, shift = self._scale_and_shift(kept, context)
        outputs = kept + self.mask * (inputs * scale + shift)
        return outputs, (self.mask * torch.log(scale)).flatten(1).sum(1)

    def inverse(self, inputs, context=None):
        kept = inputs * (1 - self.mask)
        scale, shift = self._scale_and_shift(kept, context)
        outputs = kept + self.mask * (inputs - shift) / scale
        return outputs, -(self.mask * torch.log(scale)).flatten(1).sum(1)


class VariationalDequantizer(nn.Module):
    """``(images (B, C, H, W) integer, u0 (B, C, H, W) in [0, 1)) -> (x + u, log q(u | x) (B,))``.

    ``steps`` couplings (alternating checkerboards), each a 3x3 -> 1x1 -> 3x3 conv net
    ``hidden`` channels wide, share the features of ``x`` from a two-layer conv net.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_levels: int, hidden: int,
                 steps: int):
        super().__init__()
        channels, height, width = image_shape
        self.num_levels = num_levels
        self.features = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU())
        self.couplings = CompositeTransform([
            CheckerboardCoupling(channels, hidden, hidden, height, width, even=step % 2 == 0)
            for step in range(steps)])

    def forward(self, images: torch.Tensor, u0: torch.Tensor):
        """The dequantized images ``x + u`` and ``log q(u | x)`` in nats."""
        logistic = torch.logit(u0.clamp(_EDGE, 1 - _EDGE))
        integers = images.to(u0.dtype)
        context = self.features(integers / (self.num_levels - 1) - 0.5)
        mapped, log_scale = self.couplings(logistic, context=context)
        # log q(u|x) = log q(ε) - log|det ∂f/∂ε| - log|det ∂sigmoid/∂y|; a logistic density
        # and the sigmoid's derivative are the same function, so the identity f gives 0
        log_q = (_log_sigmoid_slope(logistic) - _log_sigmoid_slope(mapped)).flatten(1).sum(1)
        return integers + torch.sigmoid(mapped), log_q - log_scale


def _log_sigmoid_slope(values: torch.Tensor) -> torch.Tensor:
    """``log sigmoid'(v) = log sigmoid(v) + log sigmoid(-v)``, elementwise (also the log
    density of the standard logistic distribution)."""
    return F.logsigmoid(values) + F.logsigmoid(-values)
