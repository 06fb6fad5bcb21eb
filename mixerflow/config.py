"""Run configuration: dataclasses loaded from YAML plus ``key.sub=value`` overrides.

Unknown keys and bad values raise :class:`~mixerflow.errors.UserError` naming the key.
"""

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixerflow.errors import UserError
from mixerflow.transforms.coupling import CONDITIONERS, COUPLINGS
from mixerflow.transforms.mixing import LINEAR_MAPS

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "imagenet32", "imagenet64")
WANDB_MODES = ("offline", "online", "disabled")
PRECISIONS = ("auto", "fp32", "bf16")
CHANNEL_MIXINGS = ("coupling", "maf")
DEVICES = "auto, cpu, cuda or cuda:N"


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one of :data:`DEVICES` (``cuda:N`` with N a number)."""
    return name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name) is not None
MIN_INIT_IMAGES = 32  # fewer gives ActNorm scales from a handful of values (a bad start)


@dataclass
class DataConfig:
    """Which images: a named data set, ``npz:DIR`` (train.npz/test.npz), ``folder:DIR`` or
    ``store:DIR`` (a memory-mapped store made by ``mixerflow prepare``)."""

    name: str = "digits"
    root: str | None = None  # local copies; else $MIXERFLOW_DATA, else ./data
    val_size: int | None = None  # images carved from train for validation; None: a tenth
    # of train, at most 5000
    download: bool = False  # torchvision data sets only; never implicit
    image_size: int | None = None  # folder:DIR only: resize to this square size
    permute_pixels: int | None = None  # seed of one fixed pixel permutation for every image


@dataclass
class ModelConfig:
    """What every model kind shares; :data:`MODEL_CONFIGS` gives each kind's own keys."""

    kind: str = "mixerflow"
    coupling: str = "affine"  # affine | additive | rq-spline
    num_bins: int = 8  # rq-spline only
    tail_bound: float = 4.0  # rq-spline only
    alpha: float = 0.05  # logit margin

    REPEATED: typing.ClassVar[str]  # the key that counts identical blocks

    def with_width(self, knob: int) -> "ModelConfig":
        """A copy whose parameter count grows with ``knob >= 1`` (the widths that
        :func:`~mixerflow.models.flow.match_width` tunes); depth and structure unchanged."""
        raise NotImplementedError


@dataclass
class MixerFlowConfig(ModelConfig):
    """MixerFlow: ``blocks`` of channel mixing then patch mixing over ``patch_size`` patches."""

    kind: str = "mixerflow"
    patch_size: int = 4
    blocks: int = 6
    channel_hidden: int = 128  # width of the channel-mixing conditioner MLPs
    patch_hidden: int = 128  # width of the patch-mixing conditioner MLPs
    hidden_layers: int = 2
    coupling_layers: int = 2  # coupling layers in each mixing step
    channel_mixing: str = "coupling"  # coupling | maf (masked autoregressive flow)
    conditioner: str = "mlp"  # mlp | kan (Kolmogorov-Arnold network)
    kan_grid: int = 5  # kan: spline intervals on each edge
    linear: str = "lu"  # lu | permutation
    shift: bool = True
    position_context: bool = False  # on in the shipped data-set configs: coherent samples
    context_features: int = 8

    REPEATED = "blocks"

    def with_width(self, knob: int) -> "MixerFlowConfig":
        """``channel_hidden = knob``, ``patch_hidden`` scaled in proportion."""
        patch_hidden = max(1, round(self.patch_hidden * knob / self.channel_hidden))
        return dataclasses.replace(self, channel_hidden=knob, patch_hidden=patch_hidden)


@dataclass
class GlowConfig(ModelConfig):
    """Glow: ``levels`` of squeeze, ``steps_per_level`` flow steps and a split."""

    kind: str = "glow"
    levels: int = 3
    steps_per_level: int = 8  # K
    hidden_channels: int = 128  # conv conditioner width

    REPEATED = "steps_per_level"

    def with_width(self, knob: int) -> "GlowConfig":
        """``hidden_channels = knob``."""
        return dataclasses.replace(self, hidden_channels=knob)


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
        """``mlp_width = knob``, ``width`` the multiple of ``heads`` nearest ``knob / 4`` (a
        fine knob: the Transformer width alone moves in steps of ``heads``)."""
        width = self.heads * max(1, round(knob / (4 * self.heads)))
        return dataclasses.replace(self, width=width, mlp_width=knob)


MODEL_CONFIGS: dict[str, type[ModelConfig]] = {
    "mixerflow": MixerFlowConfig, "glow": GlowConfig, "tarflow": TarFlowConfig}


def model_keys(kind: str | None = None) -> set[str]:
    """The model-section keys of ``kind`` (None: of every kind)."""
    kinds = MODEL_CONFIGS if kind is None else [kind]
    return {f.name for name in kinds for f in dataclasses.fields(MODEL_CONFIGS[name])}


@dataclass
class TrainConfig:
    steps: int = 1000
    max_minutes: float | None = None  # stop (and anneal) by wall clock, whichever comes first
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 50.0
    init_batch_size: int = 512  # ActNorm data-dependent initialisation
    eval_every: int = 500
    eval_batch_size: int = 500
    log_every: int = 25
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False
    threads: int | None = None  # torch CPU threads; None = torch's default
    dist_timeout_minutes: float = 10.0  # torchrun: a collective waiting longer fails the run
    inject_nan_every: int | None = None  # debugging: non-finite losses every N steps …
    inject_nan_steps: int = 1  # … this many in a row (tests the skip and roll-back)


@dataclass
class LogConfig:
    out_dir: str = "runs/run"
    wandb: str = "offline"  # WANDB_MODE, when set, wins
    project: str = "mixerflow"
    num_samples: int = 64
    temperature: float = 0.7


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=MixerFlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type (int, float, bool, str, or X | None)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    if options:
        if value is None and type(None) in options:
            return None
        annotation = next(t for t in options if t is not type(None))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key {key!r} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"config key {key!r} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise UserError(f"config key {key!r} must be a finite number, got {value!r}")
            return float(value)
        raise UserError(f"config key {key!r} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise UserError(f"config key {key!r} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {annotation!r} for {key!r}")


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"config section {prefix.rstrip('.') or '<top>'!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"unknown config key {prefix + str(unknown[0])!r}")
    kwargs = {}
    for name, value in values.items():
        if hints[name] is ModelConfig:
            kwargs[name] = _build_model(value, f"{prefix}{name}.")
        elif dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hints[name], prefix + name)
    return cls(**kwargs)


def _build_model(values: Any, prefix: str = "model.") -> ModelConfig:
    """The model section as the config class of its ``kind``; a key of another kind is an
    error that names the kind it belongs to."""
    if not isinstance(values, dict):
        raise UserError(f"config section {prefix.rstrip('.')!r} must be a mapping")
    kind = values.get("kind", "mixerflow")
    if not isinstance(kind, str) or kind not in MODEL_CONFIGS:
        kinds = ", ".join(MODEL_CONFIGS)
        raise UserError(f"config key {prefix + 'kind'!r} must be one of {kinds}; got {kind!r}")
    own = model_keys(kind)
    for key in values:
        owners = [other for other in MODEL_CONFIGS if key in model_keys(other)]
        if key not in own and owners:
            raise UserError(f"config key {prefix + key!r} belongs to model.kind "
                            f"{' / '.join(owners)}, not {kind}")
    return _build(MODEL_CONFIGS[kind], values, prefix)


def model_config_from_dict(values: dict) -> ModelConfig:
    """A model section (``dataclasses.asdict`` of one, or YAML) as its kind's config class."""
    return _build_model(values)


def _apply_override(tree: dict, override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise UserError(f"override {override!r} is not of the form key.sub=value")
    *sections, leaf = key.split(".")
    node = tree
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise UserError(f"override {override!r}: {section!r} is not a section")
    node[leaf] = yaml.safe_load(raw) if raw else ""


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read ``path`` (YAML; none means defaults), apply ``key.sub=value`` overrides, validate."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise UserError(f"config file {str(path)!r} is a folder; name a YAML file")
        if not path.is_file():
            raise UserError(f"config file {str(path)!r} not found")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise UserError(f"config file {str(path)!r} is not UTF-8 text") from None
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise UserError(f"config file {str(path)!r} is not valid YAML ({reason})") from None
        if not isinstance(tree, dict):
            raise UserError(f"config file {str(path)!r} must hold a mapping of sections (data:, "
                            f"model:, train:, log:), not a {type(tree).__name__}")
    for override in overrides:
        _apply_override(tree, override)
    cfg = config_from_dict(tree)
    _absolute_data_paths(cfg.data)
    return cfg


def load_configs(paths: list, overrides: list[str] = ()) -> list[Config]:
    """Several configs under the same overrides (compare, bench, campaign). A ``model.KEY``
    override goes to the configs whose model kind has ``KEY``; one that fits none of them is
    an error."""
    overridden = {o.partition("=")[0] for o in overrides if o.startswith("model.")}
    configs = []
    for path in paths:
        kind = load_config(path, [o for o in overrides if o.startswith("model.kind=")]).model.kind
        own = {f"model.{key}" for key in model_keys(kind)}
        configs.append(load_config(path, [o for o in overrides if not o.startswith("model.")
                                          or o.partition("=")[0] in own]))
    used = {f"model.{key}" for cfg in configs for key in model_keys(cfg.model.kind)}
    for key in sorted(overridden - used):
        if key.removeprefix("model.") not in model_keys():
            raise UserError(f"unknown config key {key!r}")
        kinds = " and ".join(sorted({cfg.model.kind for cfg in configs}))
        raise UserError(f"config key {key!r} fits none of the models here ({kinds})")
    return configs


def config_names(paths: list) -> list[str]:
    """A name per config file for reports: its stem, with ``_2``, ``_3``… where stems repeat."""
    names: list[str] = []
    for path in paths:
        stem = Path(path).stem
        name, count = stem, 1
        while name in names:
            count += 1
            name = f"{stem}_{count}"
        names.append(name)
    return names


def _absolute_data_paths(data: DataConfig) -> None:
    """Data paths as absolute paths, so a run's checkpoint finds its data from anywhere."""
    kind, sep, path = data.name.partition(":")
    if sep and kind in ("npz", "folder", "store"):
        data.name = f"{kind}:{Path(path).expanduser().absolute()}"
    if data.root is not None:
        data.root = str(Path(data.root).expanduser().absolute())


def config_from_dict(tree: dict) -> Config:
    """A validated :class:`Config` from nested dicts (YAML, checkpoints: ``Config.to_dict``)."""
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise UserError(f"config key {key!r} {message}")


def _choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, key, f"must be one of {', '.join(choices)}; got {value!r}")


def validate_data_name(name: str) -> None:
    named = name in DATASETS or name.startswith(("npz:", "folder:", "store:"))
    _require(named, "data.name",
             f"must be one of {', '.join(DATASETS)}, npz:DIR, folder:DIR or store:DIR")


def validate(cfg: Config) -> None:
    """Range and choice checks that the types alone do not express."""
    d, m, t, lg = cfg.data, cfg.model, cfg.train, cfg.log
    validate_data_name(d.name)
    _require(d.val_size is None or d.val_size >= 1, "data.val_size", "must be at least 1")
    _require(d.image_size is None or d.image_size >= 2, "data.image_size", "must be at least 2")
    _require(d.permute_pixels is None or d.permute_pixels >= 0, "data.permute_pixels",
             "must be a seed of at least 0")
    _choice(m.coupling, "model.coupling", COUPLINGS)
    _require(m.num_bins >= 1, "model.num_bins", "must be at least 1")
    _require(m.tail_bound > 0, "model.tail_bound", "must be positive")
    _require(0 <= m.alpha < 0.5, "model.alpha", "must lie in [0, 0.5)")
    if isinstance(m, MixerFlowConfig):
        _choice(m.linear, "model.linear", LINEAR_MAPS)
        _choice(m.conditioner, "model.conditioner", CONDITIONERS)
        _choice(m.channel_mixing, "model.channel_mixing", CHANNEL_MIXINGS)
        counts = ("patch_size", "blocks", "channel_hidden", "patch_hidden", "coupling_layers",
                  "context_features", "kan_grid")
        _require(m.hidden_layers >= 0, "model.hidden_layers", "must be at least 0")
    elif isinstance(m, TarFlowConfig):
        _require(m.coupling == "affine", "model.coupling",
                 f"must be affine for model.kind tarflow; got {m.coupling!r}")
        counts = ("patch_size", "blocks", "width", "attention_layers", "heads")
    else:
        counts = ("levels", "steps_per_level", "hidden_channels")
    for key in counts:
        _require(getattr(m, key) >= 1, f"model.{key}", "must be at least 1")
    if isinstance(m, TarFlowConfig):
        _require(m.width % m.heads == 0, "model.width",
                 f"must be a multiple of model.heads ({m.heads}); got {m.width}")
        _require(m.mlp_width is None or m.mlp_width >= 1, "model.mlp_width",
                 "must be at least 1")
    for key in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every",
                "checkpoint_every"):
        _require(getattr(t, key) >= 1, f"train.{key}", "must be at least 1")
    _require(t.init_batch_size >= MIN_INIT_IMAGES, "train.init_batch_size",
             f"must be at least {MIN_INIT_IMAGES}: ActNorm's data-dependent init takes its "
             f"means and scales from these images; got {t.init_batch_size}")
    _require(t.warmup_steps >= 0, "train.warmup_steps", "must be at least 0")
    _require(t.lr > 0, "train.lr", "must be positive")
    _require(t.grad_clip > 0, "train.grad_clip", "must be positive")
    _require(t.weight_decay >= 0, "train.weight_decay", "must be at least 0")
    _require(t.max_minutes is None or t.max_minutes > 0, "train.max_minutes", "must be positive")
    _require(t.threads is None or t.threads >= 1, "train.threads", "must be at least 1")
    _require(t.dist_timeout_minutes > 0, "train.dist_timeout_minutes", "must be positive")
    _require(t.inject_nan_every is None or t.inject_nan_every >= 2, "train.inject_nan_every",
             "must be at least 2")
    _require(1 <= t.inject_nan_steps < (t.inject_nan_every or 2**62), "train.inject_nan_steps",
             "must be at least 1 and below train.inject_nan_every")
    _choice(t.precision, "train.precision", PRECISIONS)
    _require(is_device_name(t.device), "train.device", f"must be {DEVICES}; got {t.device!r}")
    _choice(lg.wandb, "log.wandb", WANDB_MODES)
    _require(lg.num_samples >= 1, "log.num_samples", "must be at least 1")
    _require(lg.temperature >= 0, "log.temperature", "must be at least 0")
