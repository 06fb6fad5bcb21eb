"""Coupling layers (affine | additive | rq-spline) and their MLP conditioner (or KAN:
:mod:`mixerflow.transforms.kan`).

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
from torch.nn import functional as F

COUPLINGS = ("affine", "additive", "rq-spline")
CONDITIONERS = ("mlp", "kan")


class MLPConditioner(nn.Module):
    """``(..., in) [+ context (..., ctx)] -> (..., out)``: Linear-GELU blocks, zero-init output.

    The context only needs to broadcast against the inputs: a ``(R, ctx)`` position table
    serves ``(B, R, in)`` rows without being copied for every image.
    """

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
        layers = [*self.hidden, self.output_layer]
        hidden = self._first_layer(layers[0], inputs, context)
        for layer in layers[1:]:
            hidden = layer(hidden)
        return to_float32(hidden)

    @staticmethod
    def _first_layer(layer: nn.Linear, inputs: torch.Tensor, context: torch.Tensor | None):
        """``layer([inputs, context])`` as two products: the context part broadcasts."""
        if context is None:
            return layer(inputs)
        # one split, not two slices: its backward is one cat, not two zero-filled copies
        input_weight, context_weight = layer.weight.split(
            [inputs.shape[-1], context.shape[-1]], dim=1
        )
        return F.linear(inputs, input_weight) + F.linear(context, context_weight, layer.bias)


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
        return bounded_scale(unconstrained), shift


def bounded_scale(unconstrained: torch.Tensor) -> torch.Tensor:
    """:class:`BoundedAffineCoupling`'s scale: 1 at 0, in ``(eps/…, 1.135)`` elsewhere."""
    eps = BoundedAffineCoupling._EPS
    return (torch.sigmoid(unconstrained + 2) + eps) / BoundedAffineCoupling._AT_ZERO


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
    conditioner: str = "mlp",
    kan_grid: int = 5,
) -> Transform:
    """One coupling layer over ``(N, features)`` rows with an MLP or a KAN conditioner
    (``kan_grid``: the KAN's spline intervals)."""
    if features < 2:
        raise ValueError(f"a coupling needs at least 2 features, got {features}")
    if conditioner not in CONDITIONERS:
        raise ValueError(f"unknown conditioner {conditioner!r}; choose one of "
                         f"{', '.join(CONDITIONERS)}")
    from mixerflow.transforms.kan import KANConditioner  # kan.py builds on this module

    def network(in_features: int, out_features: int) -> nn.Module:
        if conditioner == "kan":
            return KANConditioner(in_features, out_features, hidden_features, hidden_layers,
                                  context_features, kan_grid)
        return MLPConditioner(
            in_features, out_features, hidden_features, hidden_layers, context_features
        )

    return coupling_layer(kind, alternating_mask(features, even), network, num_bins, tail_bound)


def _spline_identity_init(coupling: Transform, num_bins: int) -> None:
    """Bias the derivative logits so every knot has slope 1: the spline starts as identity."""
    params_per_feature = 3 * num_bins - 1  # widths K, heights K, interior derivatives K-1
    bias = coupling.transform_net.output_layer.bias
    derivative_slot = torch.arange(bias.numel()) % params_per_feature >= 2 * num_bins
    slope_one = math.log(math.expm1(1 - DEFAULT_MIN_DERIVATIVE))
    with torch.no_grad():
        bias[derivative_slot] = slope_one
