"""The MixerFlow transform: an invertible MLP-Mixer over image patches.

One :class:`MixerBlock`, on ``(B, C, H, W)``:
  [shift by P/2] -> patchify (B, S, D) -> channel mixing: a flow step on each patch
  (length D, weights shared by all S patches) -> transpose (B, D, S) -> patch mixing:
  a flow step on each column (length S, weights shared by all D columns) -> transpose
  -> un-patchify -> [shift back].
Odd blocks are shifted, so alternate blocks see patch grids offset by half a patch.
"""

import re

import torch
from nflows.transforms.base import Transform

from mixerflow.errors import UserError
from mixerflow.models.stack import BlockStack, patches_for
from mixerflow.transforms.autoregressive import maf_step
from mixerflow.transforms.mixing import RowWise, flow_step
from mixerflow.transforms.patches import Patchify, Shift


class MixerBlock(Transform):
    """One MixerFlow block on ``(B, C, H, W)``; the transforms it applies, in order:

    - ``shift``: a :class:`Shift` by half a patch, undone at the end (None: no shift);
    - ``patchify``: images -> patches ``(B, S, D)`` (undone at the end);
    - ``channel_mixing``: a :class:`RowWise` flow on each patch's ``D`` values;
    - ``patch_mixing``: a :class:`RowWise` flow on each of the ``D`` columns ``(B, D, S)``.
    """

    def __init__(self, patchify: Patchify, channel_mixing: RowWise, patch_mixing: RowWise,
                 shift: Shift | None = None):
        super().__init__()
        self.shift = shift
        self.patchify = patchify
        self.channel_mixing = channel_mixing
        self.patch_mixing = patch_mixing

    def _to_patches(self, images: torch.Tensor) -> torch.Tensor:
        if self.shift is not None:
            images, _ = self.shift(images)
        return self.patchify(images)[0]

    def _to_images(self, patches: torch.Tensor) -> torch.Tensor:
        images, _ = self.patchify.inverse(patches)
        return images if self.shift is None else self.shift.inverse(images)[0]

    def forward(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        patches, channel_logdet = self.channel_mixing(self._to_patches(inputs))
        columns, patch_logdet = self.patch_mixing(patches.transpose(1, 2))
        return self._to_images(columns.transpose(1, 2)), channel_logdet + patch_logdet

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        columns, patch_logdet = self.patch_mixing.inverse(self._to_patches(inputs).transpose(1, 2))
        patches, channel_logdet = self.channel_mixing.inverse(columns.transpose(1, 2))
        return self._to_images(patches), patch_logdet + channel_logdet


class MixerFlow(BlockStack):
    """A stack of :class:`MixerBlock` s on ``(B, C, H, W)``; ``blocks[k]`` is block ``k``."""

    @classmethod
    def from_config(cls, cfg, image_shape: tuple[int, int, int]) -> "MixerFlow":
        """Build from a :class:`~mixerflow.config.ModelConfig` for images of ``image_shape``."""
        patchify = patches_for(image_shape, cfg.patch_size, "patch mixing")
        if patchify.patch_dim < 2:
            raise UserError("patches hold a single value; use a patch_size of at least 2")
        context = cfg.context_features if cfg.position_context else 0
        common = dict(
            coupling=cfg.coupling,
            coupling_layers=cfg.coupling_layers,
            hidden_layers=cfg.hidden_layers,
            linear=cfg.linear,
            context_features=context,
            num_bins=cfg.num_bins,
            tail_bound=cfg.tail_bound,
            conditioner=cfg.conditioner,
            kan_grid=cfg.kan_grid,
        )

        def channel_step() -> Transform:
            if cfg.channel_mixing == "maf":
                return maf_step(patchify.patch_dim, hidden_features=cfg.channel_hidden,
                                hidden_layers=cfg.hidden_layers, linear=cfg.linear,
                                context_features=context)
            return flow_step(patchify.patch_dim, hidden_features=cfg.channel_hidden, **common)

        blocks = [
            MixerBlock(
                patchify,
                channel_mixing=RowWise(channel_step(), patchify.num_patches, context),
                patch_mixing=RowWise(flow_step(
                    patchify.num_patches, hidden_features=cfg.patch_hidden, **common
                ), patchify.patch_dim, context),
                shift=Shift(cfg.patch_size // 2) if cfg.shift and k % 2 == 1 else None,
            )
            for k in range(cfg.blocks)
        ]
        return cls(blocks, patchify)


_V1_KEY = re.compile(r"^transform\._transforms\.(\d+)\._transforms\.([1-4])\.(.*)$")


def upgrade_state_dict(state: dict) -> dict:
    """A MixerFlow ``state_dict`` saved before blocks were named (nflows' numbered
    ``_transforms``) -> today's keys. The parameters sat at position 1 or 2 of a block
    (channel mixing; 2 when shifted) and 3 or 4 (patch mixing); other keys pass unchanged."""
    upgraded = {}
    for key, value in state.items():
        match = _V1_KEY.match(key)
        if match:
            block, position, rest = match.groups()
            part = "channel_mixing" if position in "12" else "patch_mixing"
            key = f"transform.blocks.{block}.{part}.{rest}"
        upgraded[key] = value
    return upgraded
