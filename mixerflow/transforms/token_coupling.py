"""Jet's coupling (Kolesnikov et al. 2024) on patches ``(B, S, D)``: a fixed split of the
patches' values into a kept half and an updated half, along the values of each patch
(*channel-wise*) or along the patches (*spatial*), and an affine map of the updated half
computed from the kept one by a token network.

Forward (data -> noise): ``y₂ = (x₂ + b) · 2·sigmoid(h)`` with ``(b, h) = net(x₁)``, so a
zero output layer starts it as the identity and each scale lies in ``(0, 2)``.
"""

import math

import torch
from nflows.transforms.base import Transform
from torch import nn
from torch.nn import functional

from mixerflow.nn.classes import guide, unguided
from mixerflow.nn.precision import to_float32

AXES = {"channels": 2, "spatial": 1}  # which axis of (B, S, D) a coupling splits


class TokenCoupling(Transform):
    """Split ``(B, S, D)`` along ``axis`` (``channels``: the ``D`` values of every patch;
    ``spatial``: the ``S`` patches) after reordering it by ``order``: the first ``kept``
    positions condition the rest. ``net`` maps the kept part ``(B, S₁, D₁)`` to ``(B, S₁,
    2·D₂)`` (shift and scale of each updated value; for a spatial split ``S₁ = S₂``) given the
    transform's context (class labels, or None; :mod:`mixerflow.nn.classes`)."""

    def __init__(self, axis: str, order: torch.Tensor, kept: int, net: nn.Module):
        super().__init__()
        self.axis_name = axis
        self.axis = AXES[axis]
        self.kept, self.updated = kept, len(order) - kept
        self.net = net
        self.register_buffer("order", order)
        self.register_buffer("restore", torch.argsort(order))

    def extra_repr(self) -> str:
        return f"axis={self.axis_name}, kept={self.kept}, updated={self.updated}"

    def _split(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ordered = inputs.index_select(self.axis, self.order)
        return ordered.split([self.kept, self.updated], dim=self.axis)

    def _merge(self, kept: torch.Tensor, updated: torch.Tensor) -> torch.Tensor:
        return torch.cat([kept, updated], dim=self.axis).index_select(self.axis, self.restore)

    def _shift_and_raw_scale(self, kept: torch.Tensor, context
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        raw = guide(to_float32(self.net(kept, unguided(context))), context)
        shift, raw_scale = raw.chunk(2, dim=2)  # each like the update
        return shift, raw_scale

    def _logabsdet(self, raw_scale: torch.Tensor) -> torch.Tensor:
        return (functional.logsigmoid(raw_scale) + math.log(2.0)).sum(dim=(1, 2))

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        kept, updated = self._split(inputs)
        shift, raw_scale = self._shift_and_raw_scale(kept, context)
        updated = (updated + shift) * (2.0 * torch.sigmoid(raw_scale))
        return self._merge(kept, updated), self._logabsdet(raw_scale)

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        kept, updated = self._split(inputs)
        shift, raw_scale = self._shift_and_raw_scale(kept, context)
        updated = updated / (2.0 * torch.sigmoid(raw_scale)) - shift
        return self._merge(kept, updated), -self._logabsdet(raw_scale)
