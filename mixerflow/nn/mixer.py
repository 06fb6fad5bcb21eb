"""The MLP-Mixer layer (Tolstikhin et al. 2021) on token sequences ``(B, T, C)``: the MLP
counterpart of :class:`~mixerflow.nn.attention.AttentionLayer`, mixing tokens with an MLP
across the ``T`` positions instead of attention."""

import torch
from torch import nn

from mixerflow.nn.attention import mlp


class MixerLayer(nn.Module):
    """Pre-norm Mixer layer on ``(B, T, C)``: a token-mixing MLP of ``token_width`` hidden
    units applied across the ``tokens`` positions (one per channel, weights shared), then a
    channel-mixing MLP of ``mlp_width`` per token; each with a residual connection."""

    def __init__(self, width: int, tokens: int, token_width: int, mlp_width: int):
        super().__init__()
        self.token_norm = nn.LayerNorm(width)
        self.token_mlp = mlp(tokens, token_width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = mlp(width, mlp_width)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        mixed = self.token_mlp(self.token_norm(hidden).transpose(1, 2)).transpose(1, 2)
        hidden = hidden + mixed
        return hidden + self.mlp(self.mlp_norm(hidden))
