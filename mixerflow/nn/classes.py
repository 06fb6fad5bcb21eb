"""Class conditioning: the labels every kind's conditioners take as context, their learned
embeddings, and classifier-free guidance.

The context a class-conditional transform receives is ``labels (B,)`` (int64 in ``0 … K``;
``K``, one past the last class, is the *no class* token that label dropping trains), or for
guided sampling a :class:`Guided` pair: labels of a batch of two equal halves, the wanted
classes then the no-class token, and the weight ``W``. Every layer that computes a
conditioner's output passes it through :func:`guide`, which gives both halves the guided
output ``c + W·(c − u)`` of the conditional (``c``) and unconditional (``u``) passes on the
same inputs, so the halves stay equal and ``W = 0`` is plain conditional sampling. Layers
that hand a derived context to their networks (MixerFlow's rows: position + class) wrap it
again with :func:`same_guidance`.
"""

from typing import Any, NamedTuple

import torch
from torch import nn


class Guided(NamedTuple):
    """A guided context: ``context`` (what the networks see) belongs to a batch of two equal
    halves, conditional then unconditional; outputs are pushed away from the unconditional
    half's by ``weight``."""

    context: Any
    weight: float


def unguided(context: Any) -> Any:
    """What the networks see: the context inside a :class:`Guided`, else ``context`` itself."""
    return context.context if isinstance(context, Guided) else context


def same_guidance(derived: Any, context: Any) -> Any:
    """``derived`` (a context computed from ``context``) guided as ``context`` is."""
    return Guided(derived, context.weight) if isinstance(context, Guided) else derived


def guide(outputs: torch.Tensor, context: Any) -> torch.Tensor:
    """A conditioner's ``outputs (2N, ...)`` under a :class:`Guided` context: both halves get
    ``c + W·(c − u)`` (``c``, ``u``: the conditional and unconditional halves); any other
    context leaves them as they are."""
    if not isinstance(context, Guided):
        return outputs
    conditional, unconditional = outputs.chunk(2)
    guided = conditional + context.weight * (conditional - unconditional)
    return torch.cat([guided, guided])


class ClassEmbedding(nn.Module):
    """``labels (B,)`` in ``0 … num_classes`` (the last: no class) -> ``(B, features)``, a
    learned table whose rows start as ``N(0, std²)`` (0: zeros)."""

    def __init__(self, num_classes: int, features: int, std: float = 1.0):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Parameter(std * torch.randn(num_classes + 1, features))

    def forward(self, context: Any) -> torch.Tensor:
        return self.table[unguided(context)]
