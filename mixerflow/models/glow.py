"""The Glow baseline (Kingma & Dhariwal, 2018), built from nflows pieces.

``L`` levels; each level squeezes (2x2 space-to-depth) and runs ``K`` steps of
ActNorm -> invertible 1x1 convolution (LU) -> coupling with a conv conditioner
(3x3 -> 1x1 -> zero-initialised 3x3). Every level but the last then sends half of
its channels to the base (RealNVP multi-scale). The latents are returned in the
image's shape ``(B, C, H, W)``: the flat concatenation of the levels' outputs,
level 1 first (``split_levels`` cuts them apart again).
"""

import math

import torch
from nflows.transforms.base import CompositeTransform, MultiscaleCompositeTransform, Transform
from nflows.transforms.conv import OneByOneConvolution
from nflows.transforms.normalization import ActNorm
from nflows.transforms.reshape import SqueezeTransform
from torch import nn

from mixerflow.errors import UserError
from mixerflow.models.stack import layer_index
from mixerflow.transforms.coupling import alternating_mask, coupling_layer, to_float32
from mixerflow.transforms.flowstep import FlowStep


class ConvConditioner(nn.Module):
    """``(B, in, H, W) -> (B, out, H, W)``: 3x3 conv, ReLU, 1x1 conv, ReLU, zero-init 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int):
        super().__init__()
        # nflows' spline couplings scale bin logits by 1/sqrt(hidden_features) when present.
        self.hidden_features = hidden_channels
        self.hidden = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(),
        )
        self.output_layer = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.output_layer.weight)
        nn.init.zeros_(self.output_layer.bias)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return to_float32(self.output_layer(self.hidden(inputs)))


def glow_step(
    channels: int,
    *,
    even: bool,
    hidden_channels: int,
    coupling: str = "affine",
    num_bins: int = 8,
    tail_bound: float = 4.0,
) -> FlowStep:
    """One step of flow on ``(B, channels, H, W)``: ActNorm -> 1x1 conv -> coupling."""

    def conditioner(in_channels: int, out_channels: int) -> ConvConditioner:
        return ConvConditioner(in_channels, out_channels, hidden_channels)

    mask = alternating_mask(channels, even)
    return FlowStep(
        ActNorm(channels),
        OneByOneConvolution(channels, identity_init=True),
        [coupling_layer(coupling, mask, conditioner, num_bins, tail_bound)],
        feature_dim=1,
    )


POOLS = ("none", "per_level")


class Glow(Transform):
    """Multi-scale Glow on ``(B, C, H, W)``; latents come back in the same shape."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        levels: int,
        steps_per_level: int,
        hidden_channels: int,
        coupling: str = "affine",
        num_bins: int = 8,
        tail_bound: float = 4.0,
    ):
        super().__init__()
        channels, height, width = image_shape
        side = 2**levels
        if height % side or width % side:
            raise UserError(
                f"Glow with {levels} levels squeezes {levels} times, so the image sides must "
                f"be divisible by {side}; got {height}x{width} (lower model.levels)"
            )
        self.image_shape = tuple(image_shape)
        self.multiscale = MultiscaleCompositeTransform(levels, split_dim=1)
        shape = tuple(image_shape)
        for _ in range(levels):
            squeeze = SqueezeTransform(factor=2)
            shape = squeeze.get_output_shape(*shape)
            steps = [
                glow_step(shape[0], even=k % 2 == 0, hidden_channels=hidden_channels,
                          coupling=coupling, num_bins=num_bins, tail_bound=tail_bound)
                for k in range(steps_per_level)
            ]
            shape = self.multiscale.add_transform(CompositeTransform([squeeze, *steps]), shape)

    @classmethod
    def from_config(cls, cfg, image_shape: tuple[int, int, int]) -> "Glow":
        """Build from a :class:`~mixerflow.config.ModelConfig` for images of ``image_shape``."""
        return cls(image_shape, cfg.levels, cfg.steps_per_level, cfg.hidden_channels,
                   cfg.coupling, cfg.num_bins, cfg.tail_bound)

    @property
    def level_shapes(self) -> list[tuple[int, int, int]]:
        """The ``(C, H, W)`` of each level's latents, level 1 first."""
        return list(self.multiscale._output_shapes)

    def compile_regions(self) -> list[FlowStep]:
        """The modules to compile one by one: the flow steps (one structure per level and
        mask parity)."""
        return [module for module in self.modules() if isinstance(module, FlowStep)]

    def split_levels(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """Latents ``(B, C, H, W)`` -> one tensor ``(B, C_l, H_l, W_l)`` per level."""
        flat = latents.reshape(latents.shape[0], -1)
        sizes = [math.prod(shape) for shape in self.level_shapes]
        return [
            part.reshape(latents.shape[0], *shape)
            for part, shape in zip(flat.split(sizes, dim=1), self.level_shapes, strict=True)
        ]

    def forward(self, inputs, context=None):
        outputs, logabsdet = self.multiscale(inputs)
        return outputs.reshape(inputs.shape), logabsdet

    def inverse(self, inputs, context=None):
        return self.multiscale.inverse(inputs.reshape(inputs.shape[0], -1))

    def embed(self, inputs: torch.Tensor, layer: str = "z", pool: str = "none") -> torch.Tensor:
        """Features ``(B, F)`` of logit-space images ``(B, C, H, W)``: the latents of every
        level (``layer="z"``) or of level ``l`` (``"level:l"``), flat (``none``) or each
        level's channels averaged over its positions (``per_level``: F = sum of C_l)."""
        if pool not in POOLS:
            raise UserError(f"pool {pool!r}: Glow pools are {', '.join(POOLS)}")
        chosen = None if layer == "z" else layer_index(layer, "level", len(self.level_shapes))
        levels = self.split_levels(self(inputs)[0])
        if chosen is not None:
            levels = [levels[chosen - 1]]
        if pool == "per_level":
            return torch.cat([level.mean(dim=(2, 3)) for level in levels], dim=1)
        return torch.cat([level.reshape(level.shape[0], -1) for level in levels], dim=1)
