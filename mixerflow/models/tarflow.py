"""The attention flow (TarFlow-style, Zhai et al. 2024): MixerFlow's harness with causal
attention over patches in place of MLP mixing.

One :class:`TarFlowBlock`, on ``(B, C, H, W)``: patchify ``(B, S, D)`` -> [reverse the patch
order] -> an :class:`~mixerflow.transforms.attention.AutoregressiveAffine` over the ``S``
patches -> [restore the order] -> un-patchify. Odd blocks run in reverse, so every patch is
conditioned on the patches after it in one block and on those before it in the next.
"""

import torch
from nflows.transforms.base import Transform

from mixerflow.models.stack import BlockStack, patches_for
from mixerflow.transforms.attention import AutoregressiveAffine
from mixerflow.transforms.patches import Patchify


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
        patches, logabsdet = self.autoregressive(self._ordered(self.patchify(inputs)[0]))
        return self.patchify.inverse(self._ordered(patches))[0], logabsdet

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        patches, logabsdet = self.autoregressive.inverse(
            self._ordered(self.patchify(inputs)[0]))
        return self.patchify.inverse(self._ordered(patches))[0], logabsdet


class TarFlow(BlockStack):
    """A stack of :class:`TarFlowBlock` s, alternating direction; ``blocks[k]`` is block ``k``."""

    @classmethod
    def from_config(cls, cfg, image_shape: tuple[int, int, int]) -> "TarFlow":
        """Build from a :class:`~mixerflow.config.TarFlowConfig` for images of ``image_shape``."""
        patchify = patches_for(image_shape, cfg.patch_size, "attention")
        blocks = [
            TarFlowBlock(patchify, AutoregressiveAffine(
                patchify.patch_dim, patchify.num_patches, cfg.width, cfg.attention_layers,
                cfg.heads, cfg.mlp_width), reverse=k % 2 == 1)
            for k in range(cfg.blocks)
        ]
        return cls(blocks, patchify)
