"""An autoregressive affine transform over a sequence of tokens, conditioned by a causal
Transformer: the attention counterpart of a coupling (TarFlow, Zhai et al. 2024).

Token ``t`` of ``(B, T, D)`` is moved by a scale and shift computed from tokens ``< t``; the
first token passes unchanged. Density (data -> noise) is one parallel pass of the
Transformer; the inverse (sampling) runs it token by token, keeping each attention layer's
keys and values (a KV cache) so every step costs one token's work.
"""

import torch
from nflows.transforms.base import Transform
from torch import nn
from torch.nn import functional

from mixerflow.transforms.coupling import to_float32

LOG_SCALE_LIMIT = 3.0  # a block scales each value by at most e^3 (soft clamp)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention on ``(B, T, C)``, each position seeing itself and those before.

    With a ``cache`` (a dict, empty at first) the inputs are the next positions after those
    the cache holds: their keys and values are appended, and they attend to all of them.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        # no bias: a key bias adds the same q·b to every logit of a row, which softmax
        # ignores (its gradient is rounding noise, which Adam would turn into steps of lr)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, hidden: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        batch, length, width = hidden.shape
        q, k, v = (part.view(batch, length, self.heads, width // self.heads).transpose(1, 2)
                   for part in self.qkv(hidden).split(width, dim=2))
        if cache is not None and "k" in cache:
            k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
        if cache is not None:
            cache["k"], cache["v"] = k, v
        causal = length > 1  # a single new position may see every cached one
        if causal and k.shape[2] != length:
            raise ValueError("a cached attention step takes one new position at a time")
        mixed = functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.proj(mixed.transpose(1, 2).reshape(batch, length, width))


class AttentionLayer(nn.Module):
    """Pre-norm Transformer layer on ``(B, T, C)``: causal attention, then an MLP of
    ``mlp_width`` hidden units."""

    def __init__(self, width: int, heads: int, mlp_width: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_width), nn.GELU(),
                                 nn.Linear(mlp_width, width))

    def forward(self, hidden: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        hidden = hidden + self.attention(self.attention_norm(hidden), cache)
        return hidden + self.mlp(self.mlp_norm(hidden))


class AutoregressiveAffine(Transform):
    """``y_t = x_t · exp(a_t) + m_t`` on tokens ``(B, T, D)``, with ``(a_t, m_t)`` from a
    causal Transformer over ``x_{<t}`` (``a_0 = m_0 = 0``). The output layer starts at zero,
    so a fresh transform is the identity.

    The log-scale is soft-clamped to ``±LOG_SCALE_LIMIT``, not bounded near 1 as in the
    couplings: with no ActNorm or linear map beside it, this scale alone must stretch the
    near-constant background of logit-space images (spread ~0.02) to unit variance."""

    def __init__(self, features: int, num_tokens: int, width: int, layers: int, heads: int,
                 mlp_width: int | None = None):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.embed_in = nn.Linear(features, width)
        self.position = nn.Parameter(0.02 * torch.randn(num_tokens, width))
        self.layers = nn.ModuleList(AttentionLayer(width, heads, mlp_width or 4 * width)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.embed_out = nn.Linear(width, 2 * features)
        nn.init.zeros_(self.embed_out.weight)
        nn.init.zeros_(self.embed_out.bias)

    def _log_scale_and_shift(self, tokens: torch.Tensor, start: int = 0,
                             caches: list[dict] | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_scale, shift)``, each ``(B, t, D)``, for the tokens after ``tokens`` (which
        sit at positions ``start …``); ``caches`` (one per layer) carry the earlier ones."""
        hidden = self.embed_in(tokens) + self.position[start : start + tokens.shape[1]]
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, None if caches is None else caches[index])
        unconstrained, shift = to_float32(self.embed_out(self.norm(hidden))).chunk(2, dim=2)
        return LOG_SCALE_LIMIT * torch.tanh(unconstrained / LOG_SCALE_LIMIT), shift

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self._log_scale_and_shift(inputs[:, :-1])
        outputs = torch.cat([inputs[:, :1], inputs[:, 1:] * log_scale.exp() + shift], dim=1)
        return outputs, log_scale.sum(dim=(1, 2))

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        caches = [{} for _ in self.layers]
        tokens = [inputs[:, :1]]
        logabsdet = inputs.new_zeros(inputs.shape[0])
        for t in range(1, inputs.shape[1]):
            log_scale, shift = self._log_scale_and_shift(tokens[-1], t - 1, caches)
            tokens.append((inputs[:, t : t + 1] - shift) * torch.exp(-log_scale))
            logabsdet = logabsdet - log_scale.sum(dim=(1, 2))
        return torch.cat(tokens, dim=1), logabsdet
