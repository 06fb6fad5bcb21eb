"""The Glow baseline (Kingma & Dhariwal, 2018), built from nflows pieces.

``L`` levels; each level squeezes (2x2 space-to-depth) and runs ``K`` steps of
ActNorm -> invertible 1x1 convolution (LU) -> coupling with a conv conditioner
(3x3 -> 1x1 -> zero-initialised 3x3). Every level but the last then sends half of
its channels to the base (RealNVP multi-scale). With ``learned_prior`` (the published
Glow) each split-off half gets a Gaussian whose mean and scale a zero-initialised conv
computes from the half that stays, and the top level a learned per-channel Gaussian
(``transforms/prior.py``); without it they go to ``N(0, 1)``. A class-conditional Glow
(``num_classes``) gives each coupling's conditioner a learned class bias and ends the top
level in the paper's class-conditional prior (:class:`ClassPrior`; its context is the
labels, :mod:`mixerflow.nn.classes`). The latents are returned in the
image's shape ``(B, C, H, W)``: the flat concatenation of the levels' outputs,
level 1 first (``split_levels`` cuts them apart again).
"""

import dataclasses
import math
from dataclasses import dataclass

import torch
from nflows.transforms.base import CompositeTransform, MultiscaleCompositeTransform
from nflows.transforms.conv import OneByOneConvolution
from nflows.transforms.normalization import ActNorm
from nflows.transforms.reshape import SqueezeTransform

from mixerflow.core import schema
from mixerflow.core.errors import UserError
from mixerflow.models.kind import ImageTransform, ModelConfig, layer_index
from mixerflow.nn.conditioners import ConditionerSpec
from mixerflow.transforms.coupling import CouplingSpec, coupling_layer
from mixerflow.transforms.flow_layer import FlowLayer
from mixerflow.transforms.prior import ClassPrior, LearnedTop, SplitPrior


@dataclass
class GlowConfig(ModelConfig):
    """Glow: ``levels`` of squeeze, ``steps_per_level`` flow layers and a split."""

    kind: str = "glow"
    levels: int = 3
    steps_per_level: int = 8  # K
    hidden_channels: int = 128  # conv conditioner width
    learned_prior: bool = False  # split and top priors as in openai/glow (False: N(0, 1))

    REPEATED = "steps_per_level"

    def with_width(self, knob: int) -> "GlowConfig":
        """``hidden_channels = knob``."""
        return dataclasses.replace(self, hidden_channels=knob)

    def validate(self) -> None:
        super().validate()
        schema.at_least(self, "model.", 1, "levels", "steps_per_level", "hidden_channels")

    def coupling_spec(self, num_classes: int = 0) -> CouplingSpec:
        """Every coupling of the model (class-conditional conditioners with ``num_classes``)."""
        return CouplingSpec(self.coupling, self.num_bins, self.tail_bound,
                            ConditionerSpec("conv", self.hidden_channels,
                                            num_classes=num_classes))


def glow_layer(channels: int, even: bool, coupling: CouplingSpec) -> FlowLayer:
    """One flow layer (Glow's "step of flow") on ``(B, channels, H, W)``: ActNorm -> 1x1
    conv -> coupling."""
    return FlowLayer(
        ActNorm(channels),
        OneByOneConvolution(channels, identity_init=True),
        [coupling_layer(coupling, channels, even)],
        feature_dim=1,
    )


class Glow(ImageTransform):
    """Multi-scale Glow on ``(B, C, H, W)``; latents come back in the same shape."""

    LAYERS = "z, level:l"
    POOLS = ("none", "per_level")
    CLASS_CONDITIONAL = True

    def __init__(self, image_shape: tuple[int, int, int], levels: int, steps_per_level: int,
                 coupling: CouplingSpec, learned_prior: bool = False, num_classes: int = 0):
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
        for level in range(levels):
            squeeze = SqueezeTransform(factor=2)
            shape = squeeze.get_output_shape(*shape)
            steps = [squeeze]
            steps += [glow_layer(shape[0], k % 2 == 0, coupling) for k in range(steps_per_level)]
            last = level == levels - 1
            if learned_prior:
                steps.append(LearnedTop(shape[0]) if last else SplitPrior(shape[0]))
            if num_classes and last:
                steps.append(ClassPrior(shape[0], num_classes))
            shape = self.multiscale.add_transform(CompositeTransform(steps), shape)

    @classmethod
    def from_config(cls, cfg: GlowConfig, image_shape: tuple[int, int, int],
                    num_classes: int = 0) -> "Glow":
        """The Glow ``cfg`` describes for images of ``image_shape`` (of ``num_classes``
        classes when class-conditional)."""
        return cls(image_shape, cfg.levels, cfg.steps_per_level,
                   cfg.coupling_spec(num_classes), cfg.learned_prior, num_classes)

    @property
    def level_shapes(self) -> list[tuple[int, int, int]]:
        """The ``(C, H, W)`` of each level's latents, level 1 first."""
        return list(self.multiscale._output_shapes)

    def compile_regions(self) -> list[FlowLayer]:
        """The modules to compile one by one: the flow layers (one structure per level and
        mask parity)."""
        return [module for module in self.modules() if isinstance(module, FlowLayer)]

    def split_levels(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """Latents ``(B, C, H, W)`` -> one tensor ``(B, C_l, H_l, W_l)`` per level."""
        flat = latents.reshape(latents.shape[0], -1)
        sizes = [math.prod(shape) for shape in self.level_shapes]
        return [
            part.reshape(latents.shape[0], *shape)
            for part, shape in zip(flat.split(sizes, dim=1), self.level_shapes, strict=True)
        ]

    def forward(self, inputs, context=None):
        outputs, logabsdet = self.multiscale(inputs, context)
        return outputs.reshape(inputs.shape), logabsdet

    def inverse(self, inputs, context=None):
        return self.multiscale.inverse(inputs.reshape(inputs.shape[0], -1), context)

    def embed(self, inputs: torch.Tensor, layer: str = "z", pool: str = "none",
              context=None) -> torch.Tensor:
        """Features ``(B, F)`` of logit-space images ``(B, C, H, W)``: the latents of every
        level (``layer="z"``) or of level ``l`` (``"level:l"``), flat (``none``) or each
        level's channels averaged over its positions (``per_level``: F = sum of C_l)."""
        self.check_pool(pool)
        chosen = None if layer == "z" else layer_index(layer, "level", len(self.level_shapes))
        levels = self.split_levels(self(inputs, context)[0])
        if chosen is not None:
            levels = [levels[chosen - 1]]
        if pool == "per_level":
            return torch.cat([level.mean(dim=(2, 3)) for level in levels], dim=1)
        return torch.cat([level.reshape(level.shape[0], -1) for level in levels], dim=1)
