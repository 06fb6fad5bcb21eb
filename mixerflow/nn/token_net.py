"""The conditioner of Jet's couplings: a network from tokens ``(B, T, F_in)`` to per-token
outputs ``(B, T, F_out)``, mixing the tokens by attention (a ViT encoder) or by MLPs (an
MLP-Mixer) with the same width, depth and parameter count.

Both share everything but the token mixing: a linear embedding to ``width``, a learned
position embedding, ``depth`` pre-norm layers, a final LayerNorm and a zero-initialised
output projection (so a coupling starts as the identity).
"""

import torch
from torch import nn

from mixerflow.nn.attention import AttentionLayer
from mixerflow.nn.classes import ClassEmbedding
from mixerflow.nn.mixer import MixerLayer

TOKEN_MIXINGS = ("attention", "mlp")


def mixer_widths(width: int, tokens: int, mlp_width: int) -> tuple[int, int]:
    """``(token_width, mlp_width)`` of a :class:`MixerLayer` holding the parameters of an
    :class:`AttentionLayer` of ``width`` and ``mlp_width`` over ``tokens`` tokens.

    Attention's projections hold ``4·width² + width`` parameters (query, key and value
    without bias, the output with). The token-mixing MLP takes MLP-Mixer's usual half of the
    width (fewer where ``tokens`` is so large that this would hold more), and the
    channel-mixing MLP grows by what is left, so the two layers differ by less than one
    hidden unit's ``2·width + 1`` parameters. Where the width is too narrow for the tokens
    (``4·width² + width < 3·tokens + 1``, e.g. width 8 over 100 tokens) even one
    token-mixing unit holds more, and the Mixer layer is the larger.
    """
    projections = 4 * width * width + width
    token_width = max(1, min(width // 2, (projections - tokens) // (2 * tokens + 1)))
    rest = projections - (2 * tokens + 1) * token_width - tokens  # less the token MLP
    return token_width, max(1, mlp_width + round(rest / (2 * width + 1)))


class TokenNet(nn.Module):
    """``(B, tokens, in_features) -> (B, tokens, out_features)`` through ``depth`` layers of
    ``mixing`` (``attention``: bidirectional multi-head attention of ``heads``; ``mlp``:
    MLP-Mixer layers of the same parameter count), each with an MLP of ``mlp_width``. With
    ``num_classes`` it takes class labels ``(B,)`` (:mod:`mixerflow.nn.classes`), whose
    learned embedding is added to every token's."""

    def __init__(self, in_features: int, out_features: int, tokens: int, width: int, depth: int,
                 heads: int, mlp_width: int, mixing: str = "attention", num_classes: int = 0):
        super().__init__()
        if mixing not in TOKEN_MIXINGS:
            raise ValueError(f"token mixing {mixing!r} is not one of {TOKEN_MIXINGS}")
        self.embed_in = nn.Linear(in_features, width)
        self.position = nn.Parameter(torch.randn(tokens, width) / width**0.5)
        self.classes = (ClassEmbedding(num_classes, width, std=width**-0.5)
                        if num_classes else None)
        if mixing == "attention":
            layers = [AttentionLayer(width, heads, mlp_width, causal=False) for _ in range(depth)]
        else:
            token_width, channel_width = mixer_widths(width, tokens, mlp_width)
            layers = [MixerLayer(width, tokens, token_width, channel_width) for _ in range(depth)]
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(width)
        self.embed_out = nn.Linear(width, out_features)
        nn.init.zeros_(self.embed_out.weight)
        nn.init.zeros_(self.embed_out.bias)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.embed_in(tokens) + self.position
        if self.classes is not None:
            hidden = hidden + self.classes(labels)[:, None, :]
        for layer in self.layers:
            hidden = layer(hidden)
        return self.embed_out(self.norm(hidden))
