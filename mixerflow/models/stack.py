"""A stack of flow blocks: what MixerFlow, the attention flow and Jet share (running the
blocks either way, compiling them one by one, per-block embeddings)."""

import torch
from nflows.transforms.base import Transform
from torch import nn

from mixerflow.core.errors import UserError
from mixerflow.models.kind import ImageTransform, layer_index
from mixerflow.transforms.patches import Patchify


def patches_for(image_shape: tuple[int, int, int], patch_size: int, mixing: str) -> Patchify:
    """The :class:`Patchify` of ``patch_size``; a UserError where it leaves a single patch,
    which ``mixing`` (what needs two, for the message) cannot work on."""
    patchify = Patchify(image_shape, patch_size)
    if patchify.num_patches < 2:
        raise UserError(
            f"patch_size {patch_size} leaves a single patch of the "
            f"{image_shape[1]}x{image_shape[2]} image; {mixing} needs at least 2"
        )
    return patchify


class BlockStack(ImageTransform):
    """``blocks`` in order; ``blocks[k]`` is block ``k``. ``patchify`` names the patches that
    the embeddings' pools average over.

    The blocks work on images ``(B, C, H, W)``; a subclass whose blocks work on another view
    of the image (Jet's: its patches) gives the volume-preserving reshapes ``to_state`` and
    ``to_images`` between the two.
    """

    LAYERS = "z, block:k"
    POOLS = ("none", "mean_patches", "mean_channels")

    def __init__(self, blocks: list[Transform], patchify: Patchify):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.patchify = patchify

    def to_state(self, images: torch.Tensor) -> torch.Tensor:
        """What the blocks work on, from images ``(B, C, H, W)`` (the images themselves)."""
        return images

    def to_images(self, state: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` from what the blocks work on (the inverse of ``to_state``)."""
        return state

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        logabsdet = inputs.new_zeros(inputs.shape[0])
        state = self.to_state(inputs)
        for block in self.blocks:
            state, block_logdet = block(state, context)
            logabsdet = logabsdet + block_logdet
        return self.to_images(state), logabsdet

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        logabsdet = inputs.new_zeros(inputs.shape[0])
        state = self.to_state(inputs)
        for block in reversed(self.blocks):
            state, block_logdet = block.inverse(state, context)
            logabsdet = logabsdet + block_logdet
        return self.to_images(state), logabsdet

    def compile_regions(self) -> list[Transform]:
        """The modules to compile one by one: the blocks (blocks of one structure share code)."""
        return list(self.blocks)

    def embed(self, inputs: torch.Tensor, layer: str = "z", pool: str = "none",
              context=None) -> torch.Tensor:
        """Features ``(B, F)`` of logit-space images ``(B, C, H, W)``: the state after block
        ``k`` (``layer="block:k"``; ``"z"`` is the last block's output, the latent), flat
        (``none``: F = C·H·W) or averaged over patches (F = D) or over a patch's values (F = S).
        """
        self.check_pool(pool)
        state = self.to_state(inputs)
        for block in self.blocks[: layer_index(layer, "block", len(self.blocks))]:
            state, _ = block(state, context)
        state = self.to_images(state)
        if pool == "none":
            return state.reshape(state.shape[0], -1)
        patches, _ = self.patchify(state)  # (B, S, D)
        return patches.mean(dim=1 if pool == "mean_patches" else 2)
