"""The attention flow (TarFlow-style, Zhai et al. 2024): MixerFlow's harness with causal
attention over patches in place of MLP mixing.

One :class:`TarFlowBlock`, on ``(B, C, H, W)``: patchify ``(B, S, D)`` -> [reverse the patch
order] -> an :class:`~mixerflow.transforms.autoregressive.AutoregressiveAffine` over the ``S``
patches -> [restore the order] -> un-patchify. Odd blocks run in reverse, so every patch is
conditioned on the patches after it in one block and on those before it in the next.
"""

import dataclasses
from dataclasses import dataclass

import torch
from nflows.transforms.base import Transform

from mixerflow.core import schema
from mixerflow.models.kind import ModelConfig, attention_widths, check_attention_keys
from mixerflow.models.stack import BlockStack, patches_for
from mixerflow.transforms.autoregressive import AutoregressiveAffine
from mixerflow.transforms.patches import Patchify


@dataclass
class TarFlowConfig(ModelConfig):
    """The attention flow: ``blocks`` of causal-attention autoregressive affine transforms
    over ``patch_size`` patches, alternating direction (affine only)."""

    kind: str = "tarflow"
    patch_size: int = 4
    blocks: int = 4
    width: int = 128  # Transformer width (a multiple of heads)
    mlp_width: int | None = None  # hidden width of each layer's MLP; None: 4 · width
    attention_layers: int = 2  # Transformer layers in each block
    heads: int = 4

    REPEATED = "blocks"

    def with_width(self, knob: int) -> "TarFlowConfig":
        """``mlp_width = knob`` and ``width`` near ``knob / 4`` (:func:`attention_widths`)."""
        return dataclasses.replace(self, **attention_widths(self.heads, knob))

    def validate(self) -> None:
        super().validate()
        schema.at_least(self, "model.", 1, "patch_size", "blocks", "width", "attention_layers",
                        "heads")
        check_attention_keys(self)


class TarFlowBlock(Transform):
    """One attention-flow block on ``(B, C, H, W)``: ``patchify``, then ``autoregressive``
    over the patches, in reverse order when ``reverse``."""

    def __init__(self, patchify: Patchify, autoregressive: AutoregressiveAffine, reverse: bool):
        super().__init__()
        self.patchify = patchify
        self.autoregressive = autoregressive
        self.reverse = reverse

    def extra_repr(self) -> str:
        return f"reverse={self.reverse}"

    def _ordered(self, patches: torch.Tensor) -> torch.Tensor:
        return patches.flip(1) if self.reverse else patches

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        patches, logabsdet = self.autoregressive(self._ordered(self.patchify(inputs)[0]),
                                                 context)
        return self.patchify.inverse(self._ordered(patches))[0], logabsdet

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        patches, logabsdet = self.autoregressive.inverse(
            self._ordered(self.patchify(inputs)[0]), context)
        return self.patchify.inverse(self._ordered(patches))[0], logabsdet


class TarFlow(BlockStack):
    """A stack of :class:`TarFlowBlock` s, alternating direction; ``blocks[k]`` is block ``k``."""

    CLASS_CONDITIONAL = True

    @classmethod
    def from_config(cls, cfg: TarFlowConfig, image_shape: tuple[int, int, int],
                    num_classes: int = 0) -> "TarFlow":
        """The attention flow ``cfg`` describes for images of ``image_shape`` (of
        ``num_classes`` classes when class-conditional)."""
        patchify = patches_for(image_shape, cfg.patch_size, "attention")
        blocks = [
            TarFlowBlock(patchify, AutoregressiveAffine(
                patchify.patch_dim, patchify.num_patches, cfg.width, cfg.attention_layers,
                cfg.heads, cfg.mlp_width, num_classes), reverse=k % 2 == 1)
            for k in range(cfg.blocks)
        ]
        return cls(blocks, patchify)
