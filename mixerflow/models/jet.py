"""Jet (Kolesnikov, Pinto, Tschannen 2024): a stack of affine couplings on an image's patches,
each conditioned by a token network, with no ActNorm, no linear maps and no multi-scale.

The image is cut once into ``S`` patches of ``D`` values ``(B, S, D)``. Coupling ``k`` splits
them by the ``k``-th entry of ``pattern`` (cycled):
- ``channels``: a fixed random permutation of each patch's values, the first half kept;
- ``spatial``: the patches split in two equal sets by the next of ``spatial_patterns``
  (``checkerboard``, ``hstripes``, ``vstripes``; ``-inv`` swaps the sets), the first kept.
The kept part, as tokens, goes through a :class:`~mixerflow.nn.token_net.TokenNet` whose
``token_mixing`` is attention (Jet's ViT) or MLP-Mixer layers of the same parameter count,
so one key swaps attention for MLP mixing with the flow unchanged.
"""

import dataclasses
import itertools
from dataclasses import dataclass

import torch

from mixerflow.core import schema
from mixerflow.core.errors import UserError
from mixerflow.models.kind import ModelConfig, attention_widths, check_attention_keys
from mixerflow.models.stack import BlockStack, patches_for
from mixerflow.nn.token_net import TOKEN_MIXINGS, TokenNet
from mixerflow.transforms.patches import Patchify
from mixerflow.transforms.token_coupling import AXES, TokenCoupling

SPATIAL_PATTERNS = tuple(f"{name}{inverse}" for name in ("checkerboard", "hstripes", "vstripes")
                         for inverse in ("", "-inv"))


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",")]


@dataclass
class JetConfig(ModelConfig):
    """Jet: ``couplings`` affine couplings on ``patch_size`` patches, split as ``pattern``
    says (comma-separated ``channels`` / ``spatial``, cycled), each conditioned by ``depth``
    layers of ``width`` (attention of ``heads``, or MLP-Mixer layers) (affine only)."""

    kind: str = "jet"
    patch_size: int = 4
    couplings: int = 12
    # the published ImageNet 64x64 config's order of splits (big_vision's jet/imagenet64.py)
    pattern: str = "channels,channels,channels,channels,spatial"
    spatial_patterns: str = ("checkerboard,checkerboard-inv,vstripes,vstripes-inv,"
                             "hstripes,hstripes-inv")
    token_mixing: str = "attention"  # attention | mlp
    width: int = 128  # the token network's width (a multiple of heads)
    depth: int = 1  # its layers in each coupling
    heads: int = 4
    mlp_width: int | None = None  # hidden width of each layer's MLP; None: 4 · width

    REPEATED = "couplings"

    def with_width(self, knob: int) -> "JetConfig":
        """``mlp_width = knob`` and ``width`` near ``knob / 4`` (:func:`attention_widths`)."""
        return dataclasses.replace(self, **attention_widths(self.heads, knob))

    def validate(self) -> None:
        super().validate()
        schema.at_least(self, "model.", 1, "patch_size", "couplings", "width", "depth", "heads")
        check_attention_keys(self)
        schema.choice(self.token_mixing, "model.token_mixing", TOKEN_MIXINGS)
        for name in _names(self.pattern):
            schema.choice(name, "model.pattern", tuple(AXES))
        for name in _names(self.spatial_patterns):
            schema.choice(name, "model.spatial_patterns", SPATIAL_PATTERNS)

    def coupling_axes(self) -> list[str]:
        """The split of each coupling in turn: ``channels`` or ``spatial``."""
        return list(itertools.islice(itertools.cycle(_names(self.pattern)), self.couplings))


def spatial_order(name: str, grid: tuple[int, int]) -> torch.Tensor:
    """The patches (row-major over ``grid``) reordered kept set first, by the pattern
    ``name``; a UserError where it cannot split them into two equal sets."""
    rows, cols = grid
    row, col = torch.arange(rows * cols) // cols, torch.arange(rows * cols) % cols
    base = name.removesuffix("-inv")
    second = {"checkerboard": (row + col) % 2, "hstripes": row % 2, "vstripes": col % 2}[base]
    if name.endswith("-inv"):
        second = 1 - second
    if 2 * int(second.sum()) != rows * cols:
        raise UserError(f"model.spatial_patterns: {name} cannot split the {rows}x{cols} grid of "
                        f"patches into two equal sets; choose a patch_size that gives an even "
                        f"{'number of patches' if base == 'checkerboard' else 'grid side'}")
    return torch.argsort(second, stable=True)


def channel_order(features: int, index: int) -> torch.Tensor:
    """Coupling ``index``'s fixed random permutation of a patch's ``features`` values (seeded
    by ``index``, so every build of a config has the same splits)."""
    return torch.randperm(features, generator=torch.Generator().manual_seed(index))


class Jet(BlockStack):
    """Jet's couplings on the patches; ``blocks[k]`` is coupling ``k`` (a
    :class:`TokenCoupling` on ``(B, S, D)``), and ``block:k`` embeds the image after it."""

    def to_state(self, images: torch.Tensor) -> torch.Tensor:
        return self.patchify(images)[0]

    def to_images(self, state: torch.Tensor) -> torch.Tensor:
        return self.patchify.inverse(state)[0]

    CLASS_CONDITIONAL = True

    @classmethod
    def from_config(cls, cfg: JetConfig, image_shape: tuple[int, int, int],
                    num_classes: int = 0) -> "Jet":
        """The Jet ``cfg`` describes for images of ``image_shape`` (of ``num_classes``
        classes when class-conditional)."""
        patchify = patches_for(image_shape, cfg.patch_size, "a Jet coupling")
        spatial = itertools.cycle(_names(cfg.spatial_patterns))
        couplings = [coupling(cfg, patchify, axis, index, next(spatial) if axis == "spatial"
                              else None, num_classes)
                     for index, axis in enumerate(cfg.coupling_axes())]
        return cls(couplings, patchify)


def coupling(cfg: JetConfig, patchify: Patchify, axis: str, index: int,
             pattern: str | None, num_classes: int = 0) -> TokenCoupling:
    """Coupling ``index`` of ``cfg``: its split along ``axis`` (by ``pattern`` if spatial)
    and its token network (class-conditional with ``num_classes``)."""
    patches, features = patchify.num_patches, patchify.patch_dim
    if axis == "spatial":
        order, tokens, kept, net_in, net_out = (spatial_order(pattern, patchify.grid),
                                                patches // 2, patches // 2, features, features)
    else:
        if features < 2:
            raise UserError(f"model.pattern: a channels coupling splits each patch's values, "
                            f"and patch_size {cfg.patch_size} leaves {features}")
        order, tokens, kept = channel_order(features, index), patches, features // 2
        net_in, net_out = kept, features - kept
    net = TokenNet(net_in, 2 * net_out, tokens, cfg.width, cfg.depth, cfg.heads,
                   cfg.mlp_width or 4 * cfg.width, cfg.token_mixing, num_classes)
    return TokenCoupling(axis, order, kept, net)
