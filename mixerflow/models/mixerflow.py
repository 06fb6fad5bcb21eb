"""The MixerFlow transform: an invertible MLP-Mixer over image patches.

One :class:`MixerBlock`, on ``(B, C, H, W)``:
  [shift by P/2] -> patchify (B, S, D) -> channel mixing: a flow layer on each patch
  (length D, weights shared by all S patches) -> transpose (B, D, S) -> patch mixing:
  a flow layer on each column (length S, weights shared by all D columns) -> transpose
  -> un-patchify -> [shift back].
Odd blocks are shifted, so alternate blocks see patch grids offset by half a patch.
"""

import dataclasses
import re
from dataclasses import dataclass

import torch
from nflows.transforms.base import Transform

from mixerflow.core import schema
from mixerflow.core.errors import UserError
from mixerflow.models.kind import ModelConfig
from mixerflow.models.stack import BlockStack, patches_for
from mixerflow.nn.conditioners import CONDITIONERS, ConditionerSpec
from mixerflow.transforms.autoregressive import maf_layer
from mixerflow.transforms.coupling import CouplingSpec
from mixerflow.transforms.flow_layer import LINEAR_MAPS, flow_layer
from mixerflow.transforms.patches import Patchify, Shift
from mixerflow.transforms.rowwise import RowWise

CHANNEL_MIXINGS = ("coupling", "maf")


@dataclass
class MixerFlowConfig(ModelConfig):
    """MixerFlow: ``blocks`` of channel mixing then patch mixing over ``patch_size`` patches."""

    kind: str = "mixerflow"
    patch_size: int = 4
    blocks: int = 6
    channel_hidden: int = 128  # width of the channel-mixing conditioner MLPs
    patch_hidden: int = 128  # width of the patch-mixing conditioner MLPs
    hidden_layers: int = 2
    coupling_layers: int = 2  # coupling layers in each mixing layer
    channel_mixing: str = "coupling"  # coupling | maf (masked autoregressive flow)
    conditioner: str = "mlp"  # mlp | kan (Kolmogorov-Arnold network)
    kan_grid: int = 5  # kan: spline intervals on each edge
    linear: str = "lu"  # lu | permutation
    shift: bool = True
    position_context: bool = False  # on in the shipped data-set configs: coherent samples
    context_features: int = 8  # width of the position and class embeddings

    REPEATED = "blocks"

    def with_width(self, knob: int) -> "MixerFlowConfig":
        """``channel_hidden = knob``, ``patch_hidden`` scaled in proportion."""
        patch_hidden = max(1, round(self.patch_hidden * knob / self.channel_hidden))
        return dataclasses.replace(self, channel_hidden=knob, patch_hidden=patch_hidden)

    def validate(self) -> None:
        super().validate()
        schema.choice(self.linear, "model.linear", LINEAR_MAPS)
        schema.choice(self.conditioner, "model.conditioner", CONDITIONERS)
        schema.choice(self.channel_mixing, "model.channel_mixing", CHANNEL_MIXINGS)
        schema.require(self.hidden_layers >= 0, "model.hidden_layers", "must be at least 0")
        schema.at_least(self, "model.", 1, "patch_size", "blocks", "channel_hidden",
                        "patch_hidden", "coupling_layers", "context_features", "kan_grid")

    def row_context(self, num_classes: int = 0) -> int:
        """Features of the context each row's conditioners get: a position embedding, a
        class embedding (with ``num_classes``) or their sum (0: none)."""
        return self.context_features if self.position_context or num_classes else 0

    def coupling_spec(self, num_classes: int = 0) -> CouplingSpec:
        """Every coupling of the model (the channel-mixing width; patch mixing changes it)."""
        return CouplingSpec(self.coupling, self.num_bins, self.tail_bound, ConditionerSpec(
            self.conditioner, self.channel_hidden, self.hidden_layers,
            self.row_context(num_classes), self.kan_grid))


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
        patches, channel_logdet = self.channel_mixing(self._to_patches(inputs), context)
        columns, patch_logdet = self.patch_mixing(patches.transpose(1, 2), context)
        return self._to_images(columns.transpose(1, 2)), channel_logdet + patch_logdet

    def inverse(self, inputs: torch.Tensor, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        columns, patch_logdet = self.patch_mixing.inverse(
            self._to_patches(inputs).transpose(1, 2), context)
        patches, channel_logdet = self.channel_mixing.inverse(columns.transpose(1, 2), context)
        return self._to_images(patches), patch_logdet + channel_logdet


class MixerFlow(BlockStack):
    """A stack of :class:`MixerBlock` s on ``(B, C, H, W)``; ``blocks[k]`` is block ``k``."""

    CLASS_CONDITIONAL = True

    @classmethod
    def from_config(cls, cfg: MixerFlowConfig, image_shape: tuple[int, int, int],
                    num_classes: int = 0) -> "MixerFlow":
        """The MixerFlow ``cfg`` describes for images of ``image_shape`` (of ``num_classes``
        classes when class-conditional: a class embedding joins each row's context)."""
        patchify = patches_for(image_shape, cfg.patch_size, "patch mixing")
        if patchify.patch_dim < 2:
            raise UserError("patches hold a single value; use a patch_size of at least 2")
        spec, context = cfg.coupling_spec(num_classes), cfg.row_context(num_classes)

        def rowwise(layer: Transform, rows: int) -> RowWise:
            return RowWise(layer, rows, context, cfg.position_context, num_classes)

        def channel_layer() -> Transform:
            if cfg.channel_mixing == "maf":
                return maf_layer(patchify.patch_dim, hidden_features=cfg.channel_hidden,
                                 hidden_layers=cfg.hidden_layers, linear=cfg.linear,
                                 context_features=context)
            return flow_layer(patchify.patch_dim, spec, cfg.coupling_layers, cfg.linear)

        def patch_layer() -> Transform:
            return flow_layer(patchify.num_patches, spec.with_hidden(cfg.patch_hidden),
                              cfg.coupling_layers, cfg.linear)

        blocks = [  # built in this order: the random initialisation follows it
            MixerBlock(
                patchify,
                channel_mixing=rowwise(channel_layer(), patchify.num_patches),
                patch_mixing=rowwise(patch_layer(), patchify.patch_dim),
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
