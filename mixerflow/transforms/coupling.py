"""Coupling layers (affine | additive | rq-spline) over half of the features, given the
other half through any conditioner network (:mod:`mixerflow.nn.conditioners`).

A :class:`CouplingSpec` says what every coupling of a model is, once; :func:`coupling_layer`
is the one factory that builds them. Every conditioner ends in a zero-initialised layer, so a
fresh coupling is the identity map (for rq-spline the bias also sets interior derivatives to 1).
"""

import dataclasses
import math
from dataclasses import dataclass

import torch
from nflows.transforms.base import Transform
from nflows.transforms.coupling import (
    AdditiveCouplingTransform,
    AffineCouplingTransform,
    PiecewiseRationalQuadraticCouplingTransform,
)
from nflows.transforms.splines.rational_quadratic import DEFAULT_MIN_DERIVATIVE

from mixerflow.nn.conditioners import ConditionerSpec, make_conditioner

COUPLINGS = ("affine", "additive", "rq-spline")


@dataclass(frozen=True)
class CouplingSpec:
    """What a coupling is: its ``kind``, the spline's ``num_bins`` and ``tail_bound``
    (rq-spline only) and its ``conditioner``."""

    kind: str = "affine"
    num_bins: int = 8
    tail_bound: float = 4.0
    conditioner: ConditionerSpec = ConditionerSpec()

    def with_hidden(self, hidden_features: int) -> "CouplingSpec":
        """The same coupling with a conditioner ``hidden_features`` wide."""
        return dataclasses.replace(self, conditioner=dataclasses.replace(
            self.conditioner, hidden_features=hidden_features))


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


def coupling_layer(spec: CouplingSpec, features: int, even: bool) -> Transform:
    """The coupling ``spec`` describes over ``features`` (dim 1, or the channels of images),
    transforming the half that :func:`alternating_mask` ``(features, even)`` marks."""
    if features < 2:
        raise ValueError(f"a coupling needs at least 2 features, got {features}")
    mask = alternating_mask(features, even)

    def conditioner(in_features: int, out_features: int):
        return make_conditioner(spec.conditioner, in_features, out_features)

    if spec.kind == "affine":
        return BoundedAffineCoupling(mask, conditioner)
    if spec.kind == "additive":
        return AdditiveCouplingTransform(mask, conditioner)
    if spec.kind == "rq-spline":
        coupling = PiecewiseRationalQuadraticCouplingTransform(
            mask, conditioner, num_bins=spec.num_bins, tails="linear",
            tail_bound=spec.tail_bound)
        _spline_identity_init(coupling, spec.num_bins)
        return coupling
    raise ValueError(f"unknown coupling {spec.kind!r}; choose one of {', '.join(COUPLINGS)}")


def _spline_identity_init(coupling: Transform, num_bins: int) -> None:
    """Bias the derivative logits so every knot has slope 1: the spline starts as identity."""
    params_per_feature = 3 * num_bins - 1  # widths K, heights K, interior derivatives K-1
    bias = coupling.transform_net.output_layer.bias
    derivative_slot = torch.arange(bias.numel()) % params_per_feature >= 2 * num_bins
    slope_one = math.log(math.expm1(1 - DEFAULT_MIN_DERIVATIVE))
    with torch.no_grad():
        bias[derivative_slot] = slope_one
