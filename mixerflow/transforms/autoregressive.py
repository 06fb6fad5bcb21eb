"""Masked autoregressive flow (MAF, Papamakarios et al. 2017) steps, for MixerFlow's
channel mixing: each patch's values transformed one after another, each given the ones
before it (nflows' MADE as the conditioner)."""

import torch
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
from nflows.transforms.base import CompositeTransform
from nflows.transforms.normalization import ActNorm
from torch import nn

from mixerflow.transforms.coupling import bounded_scale, to_float32
from mixerflow.transforms.mixing import linear_map


class MaskedAffineAutoregressive(MaskedAffineAutoregressiveTransform):
    """nflows' affine MAF on ``(N, features)`` with our couplings' bounded scale (1 at 0) and
    a zero-initialised MADE output, so it starts as the identity. The forward pass (density)
    is one MADE call; the inverse (sampling) is exact and takes ``features`` calls."""

    def __init__(self, features: int, hidden_features: int, hidden_layers: int = 2,
                 context_features: int = 0):
        super().__init__(features, hidden_features, context_features or None,
                         num_blocks=hidden_layers, use_residual_blocks=True)
        nn.init.zeros_(self.autoregressive_net.final_layer.weight)
        nn.init.zeros_(self.autoregressive_net.final_layer.bias)

    def _scale_and_shift(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unconstrained, shift = self._unconstrained_scale_and_shift(to_float32(params))
        return bounded_scale(unconstrained), shift

    def _elementwise_forward(self, inputs, autoregressive_params):
        scale, shift = self._scale_and_shift(autoregressive_params)
        return inputs * scale + shift, torch.log(scale).sum(dim=1)

    def _elementwise_inverse(self, inputs, autoregressive_params):
        scale, shift = self._scale_and_shift(autoregressive_params)
        return (inputs - shift) / scale, -torch.log(scale).sum(dim=1)


def maf_step(features: int, *, hidden_features: int, hidden_layers: int = 2,
             linear: str = "lu", context_features: int = 0) -> CompositeTransform:
    """ActNorm -> LU map (or fixed permutation) -> :class:`MaskedAffineAutoregressive`, on
    ``(N, features)``: the MAF counterpart of :func:`~mixerflow.transforms.mixing.flow_step`."""
    return CompositeTransform([
        ActNorm(features), linear_map(features, linear),
        MaskedAffineAutoregressive(features, hidden_features, hidden_layers, context_features),
    ])
