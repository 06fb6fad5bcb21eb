"""Run configuration: the ``data``, ``model``, ``train`` and ``log`` sections as dataclasses,
loaded from YAML plus ``key.sub=value`` overrides.

Each section is defined by its layer: :class:`~mixerflow.data.sources.DataConfig`, the model
kinds' configs (:mod:`mixerflow.models`), and the training's own two here. Unknown keys and bad
values raise :class:`~mixerflow.core.errors.UserError` naming the key.
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixerflow.core import schema
from mixerflow.core.device import DEVICES, MAX_SEED, is_device_name
from mixerflow.core.errors import UserError
from mixerflow.data.sources import DataConfig, root_unused
from mixerflow.models import MixerFlowConfig, ModelConfig
from mixerflow.models.kind import model_keys
from mixerflow.nn.precision import PRECISIONS

WANDB_MODES = ("offline", "online", "disabled")
MIN_INIT_IMAGES = 32  # fewer gives ActNorm scales from a handful of values (a bad start)
SECTIONS = "data:, model:, train:, log:"
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"  # a source checkout's configs/


@dataclass
class TrainConfig:
    steps: int = 1000
    max_minutes: float | None = None  # stop (and anneal) by wall clock, whichever comes first
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100  # at most; under a time budget warmup_fraction may end it first
    warmup_fraction: float = 0.05  # warm-up ends by this share of the budget that binds
    weight_decay: float = 0.0
    grad_clip: float = 50.0
    ema: float | None = None  # decay of a moving average of the weights for evaluation
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

    def validate(self) -> None:
        """Range and choice checks that the types alone do not express."""
        self.data.validate()
        self.model.validate()
        _validate_train_and_log(self.train, self.log)


def config_from_dict(tree: dict) -> Config:
    """A validated :class:`Config` from nested dicts (YAML, checkpoints: ``Config.to_dict``)."""
    cfg = schema.build(Config, tree, "")
    cfg.validate()
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read ``path`` (YAML; none means defaults), apply ``key.sub=value`` overrides, validate."""
    tree = schema.read_yaml_mapping(path, SECTIONS) if path is not None else {}
    for override in overrides:
        schema.apply_override(tree, override)
    cfg = config_from_dict(tree)
    unused = cfg.data.root is not None and root_unused(cfg.data.name)
    schema.require(not unused, "data.root", f"(or --data-root) has no effect: {unused}")
    cfg.data.make_paths_absolute()
    return cfg


def shipped_config(name: str) -> Path:
    """The path of ``configs/<name>`` in the source checkout, wherever the command runs."""
    path = CONFIG_DIR / name
    if not path.is_file():
        raise UserError(f"the shipped config {name} is not at {path}; run from a source "
                        "checkout of mixerflow or name your own config")
    return path


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


def _validate_train_and_log(t: TrainConfig, lg: LogConfig) -> None:
    require = schema.require
    schema.at_least(t, "train.", 1, "steps", "batch_size", "eval_every", "eval_batch_size",
                    "log_every", "checkpoint_every")
    require(t.init_batch_size >= MIN_INIT_IMAGES, "train.init_batch_size",
            f"must be at least {MIN_INIT_IMAGES}: ActNorm's data-dependent init takes its "
            f"means and scales from these images; got {t.init_batch_size}")
    require(t.warmup_steps >= 0, "train.warmup_steps", "must be at least 0")
    require(0 <= t.warmup_fraction < 1, "train.warmup_fraction", "must lie in [0, 1); got "
            f"{t.warmup_fraction}")
    require(0 <= t.seed <= MAX_SEED, "train.seed", f"must lie in 0..{MAX_SEED}; got {t.seed}")
    require(t.lr > 0, "train.lr", "must be positive")
    require(t.grad_clip > 0, "train.grad_clip", "must be positive")
    require(t.weight_decay >= 0, "train.weight_decay", "must be at least 0")
    require(t.ema is None or 0 < t.ema < 1, "train.ema", "(the decay of the weights' moving "
            f"average) must lie in (0, 1), e.g. 0.99; got {t.ema}")
    require(t.max_minutes is None or t.max_minutes > 0, "train.max_minutes", "must be positive")
    require(t.threads is None or t.threads >= 1, "train.threads", "must be at least 1")
    require(t.dist_timeout_minutes > 0, "train.dist_timeout_minutes", "must be positive")
    require(t.inject_nan_every is None or t.inject_nan_every >= 2, "train.inject_nan_every",
            "must be at least 2")
    require(1 <= t.inject_nan_steps < (t.inject_nan_every or 2**62), "train.inject_nan_steps",
            "must be at least 1 and below train.inject_nan_every")
    schema.choice(t.precision, "train.precision", PRECISIONS)
    require(is_device_name(t.device), "train.device", f"must be {DEVICES}; got {t.device!r}")
    schema.choice(lg.wandb, "log.wandb", WANDB_MODES)
    require(lg.num_samples >= 1, "log.num_samples", "must be at least 1")
    require(lg.temperature >= 0, "log.temperature", "must be at least 0")
