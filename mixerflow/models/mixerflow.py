"""The MixerFlow transform: an invertible MLP-Mixer over image patches.

One block, on ``(B, C, H, W)``:
  [Shift by P/2] -> Patchify (B, S, D) -> channel mixing: a flow step on each patch
  (length D, weights shared by all S patches) -> Transpose (B, D, S) -> patch mixing:
  a flow step on each column (length S, weights shared by all D columns) -> Transpose
  -> un-Patchify -> [Shift back].
Odd blocks are shifted, so alternate blocks see patch grids offset by half a patch.
"""

import torch
from nflows.transforms.base import CompositeTransform, InverseTransform, Transform

from mixerflow.errors import UserError
from mixerflow.transforms.mixing import RowWise, flow_step
from mixerflow.transforms.patches import Patchify, Shift, Transpose


def mixer_block(
    patchify: Patchify,
    *,
    shifted: bool,
    channel_step: Transform,
    patch_step: Transform,
    context_features: int = 0,
) -> CompositeTransform:
    """One MixerFlow block on ``(B, C, H, W)``; the row flows get ``patchify``'s S and D."""
    layers: list[Transform] = [
        patchify,
        RowWise(channel_step, patchify.num_patches, context_features),
        Transpose(),
        RowWise(patch_step, patchify.patch_dim, context_features),
        Transpose(),
        InverseTransform(patchify),
    ]
    if shifted:
        shift = Shift(patchify.patch_size // 2)
        layers = [shift, *layers, InverseTransform(shift)]
    return CompositeTransform(layers)


POOLS = ("none", "mean_patches", "mean_channels")


def layer_index(layer: str, prefix: str, count: int) -> int:
    """``"z"`` -> ``count``; ``"<prefix>:k"`` -> ``k`` for 1 <= k <= count; else a UserError."""
    if layer == "z":
        return count
    name, _, number = layer.partition(":")
    if name == prefix and number.isdigit() and 1 <= int(number) <= count:
        return int(number)
    raise UserError(f"layer {layer!r}: choose z or {prefix}:k with k from 1 to {count}")


class MixerFlow(CompositeTransform):
    """A stack of MixerFlow blocks on ``(B, C, H, W)``; ``blocks[k]`` is block ``k``."""

    def __init__(self, blocks: list[Transform], patchify: Patchify):
        super().__init__(blocks)
        self.patchify = patchify

    @property
    def blocks(self) -> list[Transform]:
        return list(self._transforms)

    def compile_regions(self) -> list[Transform]:
        """The modules to compile one by one: the blocks (two structures: shifted or not)."""
        return self.blocks

    def embed(self, inputs: torch.Tensor, layer: str = "z", pool: str = "none") -> torch.Tensor:
        """Features ``(B, F)`` of logit-space images ``(B, C, H, W)``: the state after block
        ``k`` (``layer="block:k"``; ``"z"`` is the last block's output, the latent), flat
        (``none``: F = C·H·W) or averaged over patches (F = D) or over a patch's values (F = S).
        """
        if pool not in POOLS:
            raise UserError(f"pool {pool!r}: MixerFlow pools are {', '.join(POOLS)}")
        state = inputs
        for block in self.blocks[: layer_index(layer, "block", len(self.blocks))]:
            state, _ = block(state)
        if pool == "none":
            return state.reshape(state.shape[0], -1)
        patches, _ = self.patchify(state)  # (B, S, D)
        return patches.mean(dim=1 if pool == "mean_patches" else 2)

    @classmethod
    def from_config(cls, cfg, image_shape: tuple[int, int, int]) -> "MixerFlow":
        """Build from a :class:`~mixerflow.config.ModelConfig` for images of ``image_shape``."""
        patchify = Patchify(image_shape, cfg.patch_size)
        if patchify.num_patches < 2:
            raise UserError(
                f"patch_size {cfg.patch_size} leaves a single patch of the "
                f"{image_shape[1]}x{image_shape[2]} image; patch mixing needs at least 2"
            )
        if patchify.patch_dim < 2:
            raise UserError("patches hold a single value; use a patch_size of at least 2")
        context = cfg.context_features if cfg.position_context else 0
        common = dict(
            coupling=cfg.coupling,
            couplings=cfg.couplings,
            hidden_layers=cfg.hidden_layers,
            linear=cfg.linear,
            context_features=context,
            num_bins=cfg.num_bins,
            tail_bound=cfg.tail_bound,
        )
        blocks = [
            mixer_block(
                patchify,
                shifted=cfg.shift and k % 2 == 1,
                channel_step=flow_step(
                    patchify.patch_dim, hidden_features=cfg.channel_hidden, **common
                ),
                patch_step=flow_step(
                    patchify.num_patches, hidden_features=cfg.patch_hidden, **common
                ),
                context_features=context,
            )
            for k in range(cfg.blocks)
        ]
        return cls(blocks, patchify)
