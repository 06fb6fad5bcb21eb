"""The networks that give a coupling its parameters, and the one factory that builds them.

Every conditioner maps ``(..., in) [+ context] -> (..., out)`` (the conv one: images
``(B, in, H, W) -> (B, out, H, W)``), ends in a zero-initialised layer called
``output_layer`` (so a fresh coupling is the identity) and returns float32 under autocast.
It exposes ``hidden_features``, which nflows' spline couplings read.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mixerflow.nn.classes import ClassEmbedding
from mixerflow.nn.kan import KANConditioner
from mixerflow.nn.precision import to_float32

CONDITIONERS = ("mlp", "kan")  # what model.conditioner may name; "conv" is Glow's own


@dataclass(frozen=True)
class ConditionerSpec:
    """What a conditioner network is: its ``kind`` (mlp | kan | conv) and sizes.

    ``hidden_layers``, ``context_features`` and ``kan_grid`` are those of mlp and kan
    (conv is always 3x3 -> 1x1 -> 3x3; with ``num_classes`` it takes class labels as its
    context)."""

    kind: str = "mlp"
    hidden_features: int = 128
    hidden_layers: int = 2
    context_features: int = 0
    kan_grid: int = 5
    num_classes: int = 0  # conv only: a class-conditional conditioner (0: none)


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


class ConvConditioner(nn.Module):
    """``(B, in, H, W) -> (B, out, H, W)``: 3x3 conv, ReLU, 1x1 conv, ReLU, zero-init 3x3 conv
    (Glow's). With ``num_classes`` its context is class labels ``(B,)``
    (:mod:`mixerflow.nn.classes`), whose learned embedding is added to the first layer's
    output, a bias per hidden channel."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int,
                 num_classes: int = 0):
        super().__init__()
        self.hidden_features = hidden_channels
        self.hidden = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(),
        )
        # zero at the start: a fresh class-conditional conditioner is the unconditional one
        # (a unit-variance bias per class swamped the first layer: MNIST Glow 1.79 against
        # 1.72 bits/dim unconditional after 10 minutes)
        self.classes = (ClassEmbedding(num_classes, hidden_channels, std=0.0)
                        if num_classes else None)
        self.output_layer = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.output_layer.weight)
        nn.init.zeros_(self.output_layer.bias)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # One memory layout whichever way the flow runs: a flow layer's forward hands over
        # a channels-last view, its inverse a contiguous one, and cuDNN picks other kernels
        # for each; in TF32 (its float32 default on CUDA) their outputs differ by ~1e-3,
        # and the inverse is no longer exact. Channels-last, the faster one (1.6x for the
        # MNIST Glow's step on the CPU against contiguous).
        inputs = inputs.contiguous(memory_format=torch.channels_last)
        first, *rest = self.hidden
        hidden = first(inputs)
        if self.classes is not None:
            hidden = hidden + self.classes(context)[:, :, None, None]
        for layer in rest:
            hidden = layer(hidden)
        return to_float32(self.output_layer(hidden))


def make_conditioner(spec: ConditionerSpec, in_features: int, out_features: int) -> nn.Module:
    """The conditioner ``spec`` describes, from ``in_features`` to ``out_features``."""
    if spec.kind == "mlp":
        return MLPConditioner(in_features, out_features, spec.hidden_features,
                              spec.hidden_layers, spec.context_features)
    if spec.kind == "kan":
        return KANConditioner(in_features, out_features, spec.hidden_features,
                              spec.hidden_layers, spec.context_features, spec.kan_grid)
    if spec.kind == "conv":
        return ConvConditioner(in_features, out_features, spec.hidden_features, spec.num_classes)
    raise ValueError(f"unknown conditioner {spec.kind!r}; choose one of mlp, kan, conv")
