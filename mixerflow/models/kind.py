"""What a model kind is: a config dataclass, an image Transform, and one registry entry.

A kind is added by one call, wherever its two classes are defined::

    register_model(ToyConfig, ToyFlow)

after which ``model.kind: toy`` works everywhere: configs, training, checkpoints,
sampling, embeddings, ``compare`` and ``bench``. ``ToyConfig`` extends :class:`ModelConfig`
(its ``kind`` field's default names the kind); ``ToyFlow`` follows :class:`ImageTransform`.
"""

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from nflows.transforms.base import Transform
from torch import nn

from mixerflow.core import schema
from mixerflow.core.errors import UserError
from mixerflow.transforms.coupling import COUPLINGS
from mixerflow.transforms.dequantization import DEQUANTIZATIONS

DEFAULT_LABEL_DROP = 0.1  # TarFlow's share of unconditional steps for guidance
# logit-scale σ of gaussian noise: about 1.4 pixel levels at black or white (where a level
# spans 0.074 in logit) and 7 at mid-grey (0.014), with the default alpha of 0.05
DEFAULT_NOISE_STD = 0.1


@dataclass
class ModelConfig:
    """The ``model`` section: what every kind shares. A kind's subclass adds its own keys,
    checks them in :meth:`validate` and names the knob that :meth:`with_width` turns."""

    kind: str = "mixerflow"
    coupling: str = "affine"  # affine | additive | rq-spline
    num_bins: int = 8  # rq-spline only
    tail_bound: float = 4.0  # rq-spline only
    alpha: float = 0.05  # logit margin
    # uniform | variational (a learned q(u | x), Flow++) | gaussian (no dequantization:
    # N(0, noise_std²) noise on the logit scale, TarFlow's recipe; a density of noisy images)
    dequantization: str = "uniform"
    dequant_hidden: int = 16  # variational: the dequantizer's conv width …
    dequant_steps: int = 2  # … and its number of checkerboard couplings
    noise_std: float | None = None  # gaussian: σ on the logit scale (None: 0.1)
    class_conditional: bool = False  # p(x | class): labels as the conditioners' context
    label_drop: float | None = None  # class-conditional: the share of labels replaced by the
    # no-class token in training, so the model is unconditional too (None: 0.1)

    REPEATED: typing.ClassVar[str]  # the key that counts identical blocks

    def with_width(self, knob: int) -> "ModelConfig":
        """A copy whose parameter count grows with ``knob >= 1`` (the widths that
        :func:`~mixerflow.models.sizing.match_width` tunes); depth and structure unchanged."""
        raise NotImplementedError

    def validate(self) -> None:
        """Range and choice checks the types alone do not express (a UserError naming the
        key); a subclass adds its own after ``super().validate()``."""
        schema.choice(self.coupling, "model.coupling", COUPLINGS)
        schema.require(self.num_bins >= 1, "model.num_bins", "must be at least 1")
        schema.require(self.tail_bound > 0, "model.tail_bound", "must be positive")
        schema.require(0 <= self.alpha < 0.5, "model.alpha", "must lie in [0, 0.5)")
        schema.choice(self.dequantization, "model.dequantization", DEQUANTIZATIONS)
        schema.at_least(self, "model.", 1, "dequant_hidden", "dequant_steps")
        schema.require(self.noise_std is None or self.dequantization == "gaussian",
                       "model.noise_std", "applies to model.dequantization: gaussian only")
        schema.require(self.noise_std is None or 0 < self.noise_std < math.inf,
                       "model.noise_std", "must be a positive number")
        schema.require(not self.class_conditional or MODEL_KINDS[self.kind].transform
                       .CLASS_CONDITIONAL, "model.class_conditional",
                       f"model.kind {self.kind} has no class-conditional form")
        schema.require(self.label_drop is None or self.class_conditional, "model.label_drop",
                       "applies to class-conditional models only (model.class_conditional)")
        schema.require(self.label_drop is None or 0 <= self.label_drop < 1, "model.label_drop",
                       "must lie in [0, 1)")

    @property
    def noise_scale(self) -> float:
        """σ of the logit-scale noise of a ``gaussian`` model (0: the other objectives)."""
        if self.dequantization != "gaussian":
            return 0.0
        return DEFAULT_NOISE_STD if self.noise_std is None else self.noise_std

    @property
    def drop_rate(self) -> float:
        """The share of training labels replaced by the no-class token (0: unconditional)."""
        if not self.class_conditional:
            return 0.0
        return DEFAULT_LABEL_DROP if self.label_drop is None else self.label_drop

    @classmethod
    def from_mapping(cls, values: Any, prefix: str = "model.") -> "ModelConfig":
        """The model section as the config class of its ``kind``; a key of another kind is
        an error that names the kind it belongs to."""
        if not isinstance(values, dict):
            raise UserError(f"config section {prefix.rstrip('.')!r} must be a mapping")
        kind = values.get("kind", ModelConfig.kind)
        if not isinstance(kind, str) or kind not in MODEL_KINDS:
            raise UserError(f"config key {prefix + 'kind'!r} must be one of "
                            f"{', '.join(MODEL_KINDS)}; got {kind!r}")
        own = model_keys(kind)
        for key in values:
            owners = [other for other in MODEL_KINDS if key in model_keys(other)]
            if key not in own and owners:
                raise UserError(f"config key {prefix + key!r} belongs to model.kind "
                                f"{' / '.join(owners)}, not {kind}")
        return schema.build(MODEL_KINDS[kind].config, values, prefix)


def attention_widths(heads: int, knob: int) -> dict[str, int]:
    """The ``with_width`` of the kinds with Transformer conditioners (TarFlow, Jet):
    ``mlp_width = knob``, ``width`` the multiple of ``heads`` nearest ``knob / 4`` (a fine
    knob: the Transformer width alone moves in steps of ``heads``)."""
    return {"width": heads * max(1, round(knob / (4 * heads))), "mlp_width": knob}


def check_attention_keys(cfg: "ModelConfig") -> None:
    """What the kinds with Transformer conditioners require: affine couplings, a ``width``
    that ``heads`` divide and an ``mlp_width`` of at least 1 (None: 4 · width)."""
    schema.require(cfg.coupling == "affine", "model.coupling",
                   f"must be affine for model.kind {cfg.kind}; got {cfg.coupling!r}")
    schema.require(cfg.width % cfg.heads == 0, "model.width",
                   f"must be a multiple of model.heads ({cfg.heads}); got {cfg.width}")
    schema.require(cfg.mlp_width is None or cfg.mlp_width >= 1, "model.mlp_width",
                   "must be at least 1")


class ImageTransform(Transform):
    """The contract of a kind's transform: logit-space images ``(B, C, H, W)`` to latents of
    the same shape (nflows direction, data -> noise: ``forward`` returns ``(z, logabsdet
    (B,))``, ``inverse`` the reverse).

    ``LAYERS`` and ``POOLS`` name what :meth:`embed` takes, for help texts and messages.
    A kind with ``CLASS_CONDITIONAL`` builds a class-conditional form
    (``from_config(..., num_classes=K)``) whose ``forward``, ``inverse`` and ``embed`` take
    class labels as their ``context`` (:mod:`mixerflow.nn.classes`).
    """

    LAYERS: typing.ClassVar[str] = "z"
    POOLS: typing.ClassVar[tuple[str, ...]] = ("none",)
    CLASS_CONDITIONAL: typing.ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: ModelConfig, image_shape: tuple[int, int, int]) -> "ImageTransform":
        """The transform ``cfg`` describes for images of ``image_shape`` (a class-conditional
        kind takes ``num_classes`` too)."""
        raise NotImplementedError

    def embed(self, inputs: torch.Tensor, layer: str = "z", pool: str = "none") -> torch.Tensor:
        """Features ``(B, F)`` of logit-space images ``(B, C, H, W)`` at ``layer`` (a
        class-conditional kind takes ``context`` too)."""
        raise NotImplementedError

    def compile_regions(self) -> list[nn.Module]:
        """The modules ``train.compile`` compiles one by one (the whole transform by default)."""
        return [self]

    def check_pool(self, pool: str) -> None:
        if pool not in self.POOLS:
            raise UserError(f"pool {pool!r}: {type(self).__name__} pools are "
                            f"{', '.join(self.POOLS)}")


def layer_index(layer: str, prefix: str, count: int) -> int:
    """``"z"`` -> ``count``; ``"<prefix>:k"`` -> ``k`` for 1 <= k <= count; else a UserError."""
    if layer == "z":
        return count
    name, _, number = layer.partition(":")
    if name == prefix and number.isdigit() and 1 <= int(number) <= count:
        return int(number)
    raise UserError(f"layer {layer!r}: choose z or {prefix}:k with k from 1 to {count}")


StateUpgrade = Callable[[dict], dict]


@dataclass(frozen=True)
class ModelKind:
    """A registered kind: its config class, its transform class and, for checkpoints saved
    before a change of parameter names, the function that renames their weights."""

    config: type[ModelConfig]
    transform: type[ImageTransform]
    upgrade_state: StateUpgrade | None = None


MODEL_KINDS: dict[str, ModelKind] = {}


def register_model(config: type[ModelConfig], transform: type[ImageTransform],
                   upgrade_state: StateUpgrade | None = None) -> None:
    """Make the kind that ``config``'s ``kind`` default names buildable from configs."""
    name = config().kind
    MODEL_KINDS[name] = ModelKind(config, transform, upgrade_state)


def model_keys(kind: str | None = None) -> set[str]:
    """The model-section keys of ``kind`` (None: of every kind)."""
    kinds = MODEL_KINDS if kind is None else [kind]
    return {f.name for name in kinds for f in dataclasses.fields(MODEL_KINDS[name].config)}


def kinds_text(describe: Callable[[type[ImageTransform]], str]) -> str:
    """``describe(transform)`` of every kind, grouped: ``"a (MixerFlow, TarFlow), b (Glow)"``."""
    groups: dict[str, list[str]] = {}
    for kind in MODEL_KINDS.values():
        groups.setdefault(describe(kind.transform), []).append(kind.transform.__name__)
    return "; ".join(f"{text} ({', '.join(names)})" for text, names in groups.items())
