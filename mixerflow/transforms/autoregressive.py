"""Autoregressive affine transforms: each value (or token) moved by a scale and shift computed
from the ones before it.

- :class:`MaskedAffineAutoregressive` (MAF, Papamakarios et al. 2017), for MixerFlow's
  channel mixing: each patch's values in turn, nflows' MADE as the conditioner;
  :func:`maf_layer` puts ActNorm and the linear map before it.
- :class:`AutoregressiveAffine` (TarFlow, Zhai et al. 2024): token ``t`` of ``(B, T, D)``
  given tokens ``< t`` through a causal Transformer. Density (data -> noise) is one parallel
  pass; the inverse (sampling) runs token by token, keeping each attention layer's keys and
  values (a KV cache) so every step costs one token's work.
"""

import torch
from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
from nflows.transforms.base import CompositeTransform, Transform
from nflows.transforms.normalization import ActNorm
from torch import nn

from mixerflow.nn.attention import AttentionLayer
from mixerflow.nn.classes import ClassEmbedding, guide, unguided
from mixerflow.nn.precision import to_float32
from mixerflow.transforms.coupling import bounded_scale
from mixerflow.transforms.flow_layer import linear_map

LOG_SCALE_LIMIT = 3.0  # a TarFlow block scales each value by at most e^3 (soft clamp)


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

    def _params(self, values: torch.Tensor, context) -> torch.Tensor:
        """MADE's outputs for ``values``, guided under a :class:`Guided` context."""
        return guide(self.autoregressive_net(values, unguided(context)), context)

    def forward(self, inputs, context=None):
        return self._elementwise_forward(inputs, self._params(inputs, context))

    def inverse(self, inputs, context=None):
        outputs, logabsdet = torch.zeros_like(inputs), None
        for _ in range(inputs.shape[1]):  # value k is exact after pass k (nflows' loop)
            outputs, logabsdet = self._elementwise_inverse(inputs, self._params(outputs, context))
        return outputs, logabsdet

    def _scale_and_shift(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unconstrained, shift = self._unconstrained_scale_and_shift(to_float32(params))
        return bounded_scale(unconstrained), shift

    def _elementwise_forward(self, inputs, autoregressive_params):
        scale, shift = self._scale_and_shift(autoregressive_params)
        return inputs * scale + shift, torch.log(scale).sum(dim=1)

    def _elementwise_inverse(self, inputs, autoregressive_params):
        scale, shift = self._scale_and_shift(autoregressive_params)
        return (inputs - shift) / scale, -torch.log(scale).sum(dim=1)


def maf_layer(features: int, *, hidden_features: int, hidden_layers: int = 2,
             linear: str = "lu", context_features: int = 0) -> CompositeTransform:
    """ActNorm -> LU map (or fixed permutation) -> :class:`MaskedAffineAutoregressive`, on
    ``(N, features)``: the MAF counterpart of
    :func:`~mixerflow.transforms.flow_layer.flow_layer`."""
    return CompositeTransform([
        ActNorm(features), linear_map(features, linear),
        MaskedAffineAutoregressive(features, hidden_features, hidden_layers, context_features),
    ])


class AutoregressiveAffine(Transform):
    """``y_t = x_t · exp(a_t) + m_t`` on tokens ``(B, T, D)``, with ``(a_t, m_t)`` from a
    causal Transformer over ``x_{<t}`` (``a_0 = m_0 = 0``). The output layer starts at zero,
    so a fresh transform is the identity.

    The log-scale is soft-clamped to ``±LOG_SCALE_LIMIT``, not bounded near 1 as in the
    couplings: with no ActNorm or linear map beside it, this scale alone must stretch the
    near-constant background of logit-space images (spread ~0.02) to unit variance.

    With ``num_classes`` the context is class labels (:mod:`mixerflow.nn.classes`), whose
    learned embedding is added to every token's, as TarFlow does."""

    def __init__(self, features: int, num_tokens: int, width: int, layers: int, heads: int,
                 mlp_width: int | None = None, num_classes: int = 0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.embed_in = nn.Linear(features, width)
        self.position = nn.Parameter(0.02 * torch.randn(num_tokens, width))
        self.classes = ClassEmbedding(num_classes, width, std=0.02) if num_classes else None
        self.layers = nn.ModuleList(AttentionLayer(width, heads, mlp_width or 4 * width)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.embed_out = nn.Linear(width, 2 * features)
        nn.init.zeros_(self.embed_out.weight)
        nn.init.zeros_(self.embed_out.bias)

    def _log_scale_and_shift(self, tokens: torch.Tensor, context=None, start: int = 0,
                             caches: list[dict] | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_scale, shift)``, each ``(B, t, D)``, for the tokens after ``tokens`` (which
        sit at positions ``start …``); ``caches`` (one per layer) carry the earlier ones."""
        hidden = self.embed_in(tokens) + self.position[start : start + tokens.shape[1]]
        if self.classes is not None:
            hidden = hidden + self.classes(context)[:, None, :]
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, None if caches is None else caches[index])
        raw = guide(to_float32(self.embed_out(self.norm(hidden))), context)
        unconstrained, shift = raw.chunk(2, dim=2)
        return LOG_SCALE_LIMIT * torch.tanh(unconstrained / LOG_SCALE_LIMIT), shift

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self._log_scale_and_shift(inputs[:, :-1], context)
        outputs = torch.cat([inputs[:, :1], inputs[:, 1:] * log_scale.exp() + shift], dim=1)
        return outputs, log_scale.sum(dim=(1, 2))

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        caches = [{} for _ in self.layers]
        tokens = [inputs[:, :1]]
        logabsdet = inputs.new_zeros(inputs.shape[0])
        for t in range(1, inputs.shape[1]):
            log_scale, shift = self._log_scale_and_shift(tokens[-1], context, t - 1, caches)
            tokens.append((inputs[:, t : t + 1] - shift) * torch.exp(-log_scale))
            logabsdet = logabsdet - log_scale.sum(dim=(1, 2))
        return torch.cat(tokens, dim=1), logabsdet
