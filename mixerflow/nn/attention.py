"""Transformer layers on token sequences ``(B, T, C)``: causal, with a key/value cache for
generating one position at a time (the attention flow's conditioner), or bidirectional (the
ViT layers of Jet's couplings)."""

import torch
from torch import nn
from torch.nn import functional


def mlp(features: int, hidden: int) -> nn.Sequential:
    """``Linear(features, hidden) -> GELU -> Linear(hidden, features)``: a Transformer (or
    MLP-Mixer) layer's MLP."""
    return nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, features))


class SelfAttention(nn.Module):
    """Multi-head self-attention on ``(B, T, C)``; when ``causal``, each position sees itself
    and those before, else every position.

    With a ``cache`` (a dict, empty at first; causal only) the inputs are the next positions
    after those the cache holds: their keys and values are appended, and they attend to all
    of them.
    """

    def __init__(self, width: int, heads: int, causal: bool = True):
        super().__init__()
        self.heads = heads
        self.causal = causal
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
        causal = self.causal and length > 1  # a single new position may see every cached one
        if causal and k.shape[2] != length:
            raise ValueError("a cached attention step takes one new position at a time")
        mixed = functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.proj(mixed.transpose(1, 2).reshape(batch, length, width))


class AttentionLayer(nn.Module):
    """Pre-norm Transformer layer on ``(B, T, C)``: attention (causal unless told), then an
    MLP of ``mlp_width`` hidden units."""

    def __init__(self, width: int, heads: int, mlp_width: int, causal: bool = True):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads, causal)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = mlp(width, mlp_width)

    def forward(self, hidden: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        hidden = hidden + self.attention(self.attention_norm(hidden), cache)
        return hidden + self.mlp(self.mlp_norm(hidden))
