"""Coupling layers (affine | additive | rq-spline) and their MLP conditioner.

Every conditioner ends in a zero-initialised layer, so a fresh coupling is the
identity map (for rq-spline the bias also sets interior derivatives to 1).
"""

import math
from collections.abc import Callable

import torch
from nflows.transforms.base import Transform
from nflows.transforms.coupling import (
    AdditiveCouplingTransform,
    AffineCouplingTransform,
    PiecewiseRationalQuadraticCouplingTransform,
)
from nflows.transforms.splines.rational_quadratic import DEFAULT_MIN_DERIVATIVE
from torch import nn

COUPLINGS = ("affine", "additive", "rq-spline")


class MLPConditioner(nn.Module):
    """``(N, in) [+ context (N, ctx)] -> (N, out)``: Linear-GELU blocks, zero-init output."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int,
        hidden_layers: int = 2,
        context_features: int = 0,
    ):
        super().__init__()
        # nflows' spline couplings scale bin logits by 1/sqrt(hidden_features) when present.
        self.hidden_features = hidden_features
        layers: list[nn.Module] = []
        width = in_features + context_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden_features), nn.GELU()]
            width = hidden_features
        self.hidden = nn.Sequential(*layers)
        self.output_layer = nn.Linear(width, out_features)
        nn.init.zeros_(self.output_layer.weight)
        nn.init.zeros_(self.output_layer.bias)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None:
            inputs = torch.cat([inputs, context.to(inputs.dtype)], dim=1)
        return to_float32(self.output_layer(self.hidden(inputs)))


def to_float32(outputs: torch.Tensor) -> torch.Tensor:
    """Under bf16 autocast a conditioner runs in bf16; the flow arithmetic stays float32."""
    return outputs.float() if outputs.dtype in (torch.bfloat16, torch.float16) else outputs


class BoundedAffineCoupling(AffineCouplingTransform):
    """Affine coupling with Glow's bounded scale, rescaled to be exactly 1 at h = 0.

    ``scale = (sigmoid(h + 2) + eps) / (sigmoid(2) + eps)`` lies in ``(eps/…, 1.135)``:
    bounded like Glow's ``sigmoid(h + 2)``, yet the zero-initialised conditioner
    makes the layer the identity instead of a 0.88 contraction.
    """

    _EPS = 1e-3
    _AT_ZERO = 1 / (1 + math.exp(-2.0)) + _EPS

    def _scale_and_shift(self, transform_params):
        unconstrained = transform_params[:, self.num_transform_features :, ...]
        shift = transform_params[:, : self.num_transform_features, ...]
        scale = (torch.sigmoid(unconstrained + 2) + self._EPS) / self._AT_ZERO
        return scale, shift


def alternating_mask(features: int, even: bool) -> torch.Tensor:
    """1 marks the features the coupling transforms; ``even`` picks which half."""
    mask = torch.zeros(features)
    mask[int(not even) :: 2] = 1
    return mask


Conditioner = Callable[[int, int], nn.Module]  # (in_features, out_features) -> network


def coupling_layer(
    kind: str,
    mask: torch.Tensor,
    conditioner: Conditioner,
    num_bins: int = 8,
    tail_bound: float = 4.0,
) -> Transform:
    """A coupling of ``kind`` over ``mask``'s features (dim 1), any conditioner network.

    The network's last layer must be called ``output_layer`` and start at zero.
    """
    if kind == "affine":
        return BoundedAffineCoupling(mask, conditioner)
    if kind == "additive":
        return AdditiveCouplingTransform(mask, conditioner)
    if kind == "rq-spline":
        coupling = PiecewiseRationalQuadraticCouplingTransform(
            mask, conditioner, num_bins=num_bins, tails="linear", tail_bound=tail_bound
        )
        _spline_identity_init(coupling, num_bins)
        return coupling
    raise ValueError(f"unknown coupling {kind!r}; choose one of {', '.join(COUPLINGS)}")


def make_coupling(
    kind: str,
    features: int,
    even: bool,
    hidden_features: int,
    hidden_layers: int = 2,
    context_features: int = 0,
    num_bins: int = 8,
    tail_bound: float = 4.0,
) -> Transform:
    """One coupling layer with an MLP conditioner over ``(N, features)`` rows."""
    if features < 2:
        raise ValueError(f"a coupling needs at least 2 features, got {features}")

    def conditioner(in_features: int, out_features: int) -> MLPConditioner:
        return MLPConditioner(
            in_features, out_features, hidden_features, hidden_layers, context_features
        )

    return coupling_layer(kind, alternating_mask(features, even), conditioner, num_bins, tail_bound)


def _spline_identity_init(coupling: Transform, num_bins: int) -> None:
    """Bias the derivative logits so every knot has slope 1: the spline starts as identity."""
    params_per_feature = 3 * num_bins - 1  # widths K, heights K, interior derivatives K-1
    bias = coupling.transform_net.output_layer.bias
    derivative_slot = torch.arange(bias.numel()) % params_per_feature >= 2 * num_bins
    slope_one = math.log(math.expm1(1 - DEFAULT_MIN_DERIVATIVE))
    with torch.no_grad():
        bias[derivative_slot] = slope_one
