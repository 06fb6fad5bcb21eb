"""What a run starts from: its run folder, claimed, and a fresh model (ActNorm initialised)
or the model, optimiser and random streams of its checkpoint."""

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from mixerflow.core.device import require_memory
from mixerflow.core.errors import UserError
from mixerflow.core.files import claimable_folder, is_temporary, not_an_input, output_path
from mixerflow.data.images import Splits, require_labels
from mixerflow.data.sampler import BatchSampler
from mixerflow.data.sources import data_folders
from mixerflow.models.flow import ImageFlow, build_model
from mixerflow.models.sizing import check_model_fits
from mixerflow.training.checkpoint import (
    MODEL_KEYS,
    TRAINING_KEYS,
    flow_from_checkpoint,
    read_checkpoint,
)
from mixerflow.training.config import MIN_INIT_IMAGES, Config
from mixerflow.training.distributed import Distributed
from mixerflow.training.lifecycle import RunLock
from mixerflow.training.step import TrainStep, initialize_actnorm, make_optimizer, use_fused_adam

WHERE_NOT_WHAT = {"root", "download"}  # data keys that may change between resumes
RUN_FILES = {".lock", "config.yaml", "metrics.jsonl", "checkpoint.pt", "samples.png",
             "results.json", "wandb", "wandb_id"}  # what a run writes into its folder
RUN_FOLDERS = {"wandb"}  # the one folder among them
# None: every key; train.seed is refused since a resume continues the saved generators
SAME_RUN_KEYS = {"data": None, "model": None, "train": {"batch_size", "seed"}}


@dataclass
class Progress:
    """How far a run has come; saved in every checkpoint."""

    step: int = 0
    elapsed: float = 0.0  # seconds spent in training steps (evaluation excluded)
    lr_scale: float = 1.0  # halved at each roll-back after a run of non-finite steps
    rollbacks: int = 0

    def done(self, cfg: Config) -> bool:
        budget = cfg.train.max_minutes
        out_of_time = budget is not None and self.elapsed >= 60 * budget
        return self.step >= cfg.train.steps or out_of_time


@dataclass
class Start:
    """The model, its optimiser step, the batch stream and the progress a run starts from."""

    flow: ImageFlow
    step: TrainStep
    batches: BatchSampler
    progress: Progress


def claim_run_folder(cfg: Config, resume: bool, world: Distributed) -> RunLock | None:
    """Lock the run folder (main rank) and check it suits a new run or a resume; a refusal
    reaches every rank."""
    run_dir = Path(cfg.log.out_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    lock, error = None, None
    if world.world_size > 1 and cfg.train.batch_size % world.world_size:
        error = (f"config key 'train.batch_size' ({cfg.train.batch_size}) is the global batch "
                 f"and must divide evenly among the {world.world_size} processes")
    elif world.is_main:
        try:
            _check_run_folder(cfg, resume)
            lock = RunLock(run_dir)
            lock.acquire()
            if ckpt_path.exists() and not resume:
                raise UserError(f"{ckpt_path} already exists; pass --resume to continue that "
                                "run or set log.out_dir=... for a new one")
            if resume and not ckpt_path.exists():
                raise UserError(f"--resume: no checkpoint at {ckpt_path}")
        except UserError as err:
            error = str(err)
            if lock is not None:
                lock.release()
    error = world.first_error(error)
    if error:
        raise UserError(error)
    return lock


def read_run_checkpoint(cfg: Config) -> dict:
    """The checkpoint in the run folder, with everything a resume needs."""
    return read_checkpoint(Path(cfg.log.out_dir) / "checkpoint.pt", MODEL_KEYS + TRAINING_KEYS)


def finished_result(cfg: Config, payload: dict) -> dict | None:
    """The saved results of a run that ``payload`` (its checkpoint) shows already trained to
    ``cfg``'s budget, or None when a resume has steps to take (or the run never finished)."""
    step, elapsed = payload["step"], payload["elapsed"]
    if not (isinstance(step, int) and isinstance(elapsed, int | float)):
        return None
    results = Path(cfg.log.out_dir) / "results.json"
    if not Progress(step, elapsed).done(cfg) or not results.is_file():
        return None
    try:
        result = json.loads(results.read_text())
    except (OSError, ValueError):
        return None  # damaged: the resume evaluates and writes it again
    return result if isinstance(result, dict) and "test_bpd" in result else None


def with_run_data_root(cfg: Config, payload: dict) -> Config:
    """``cfg`` reading its data where the run was trained, unless the command says where the
    data lies now (``--data-root``, ``data.root`` or ``$MIXERFLOW_DATA``)."""
    saved = payload["config"].get("data") if isinstance(payload["config"], dict) else None
    root = saved.get("root") if isinstance(saved, dict) else None
    if cfg.data.root is not None or os.environ.get("MIXERFLOW_DATA") or not isinstance(root, str):
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=root))


def is_run_file(name: str) -> bool:
    """Whether a run writes files of this name into its folder (atomic writes' temporaries
    included)."""
    return name in RUN_FILES or is_temporary(name)


def _check_run_folder(cfg: Config, resume: bool) -> None:
    """``log.out_dir`` names a usable path, no input, and (for a new run) a folder that is new,
    empty or a run's that wrote no checkpoint: never the user's own files."""
    run_dir = output_path(cfg.log.out_dir, "config key 'log.out_dir'")
    try:
        not_an_input(run_dir, data_folders(cfg.data), "config key 'log.out_dir'")
        if not resume and not (run_dir / "checkpoint.pt").exists():
            claimable_folder(run_dir, is_run_file, "config key 'log.out_dir'")
        for name in sorted(RUN_FILES - {".lock"}):  # RunLock reports its own
            entry = run_dir / name
            if entry.exists() and entry.is_dir() != (name in RUN_FOLDERS):
                kinds = ("a file", "a folder")[::1 if name in RUN_FOLDERS else -1]
                raise UserError(f"{entry} is {kinds[0]} where the run writes {kinds[1]}; "
                                "move it aside")
    except OSError as err:  # a name too long, a folder that cannot be read
        raise UserError(f"cannot use {run_dir} as the run folder (log.out_dir): "
                        f"{err.strerror}") from None


def start(cfg: Config, splits: Splits, world: Distributed, payload: dict | None = None) -> Start:
    """A fresh model with its ActNorm initialised, or the one in ``payload``, the run
    folder's checkpoint (:func:`read_run_checkpoint`), to resume."""
    path = Path(cfg.log.out_dir) / "checkpoint.pt"
    _check_enough_data(cfg, splits, resume=payload is not None)
    _check_batches_fit(cfg, splits, world.device)
    if payload is None:
        return _with_optimiser(cfg, _fresh_model(cfg, splits, world.device), splits, world)
    flow, saved_cfg = flow_from_checkpoint(payload, path)
    _check_same_run(cfg, saved_cfg, path)
    flow.require_images(splits.image_shape, splits.num_levels, cfg.data.name)
    for name, part in (("train", splits.train), ("validation", splits.val),
                       ("test", splits.test)):
        if flow.num_classes:
            require_labels(part.labels, flow.num_classes, f"{cfg.data.name}'s {name} split")
    started = _with_optimiser(cfg, flow.to(world.device), splits, world)
    try:
        started.step.optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng"])
        if "step_state" in payload:  # checkpoints before the device-side generators lack these
            started.step.load_state_dict(payload["step_state"])
            started.batches.load_state_dict(payload["batch_state"])
        _load_average(started.step, payload, path)
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise UserError(f"--resume: {path} is damaged: its training state does not "
                        f"load ({' '.join(str(err).split())[:200]})") from None
    for group in started.step.optimizer.param_groups:  # loading brought the saved value back
        group["weight_decay"] = cfg.train.weight_decay
    use_fused_adam(started.step.optimizer)
    started.progress = Progress(payload["step"], payload["elapsed"],
                                payload.get("lr_scale", 1.0), payload.get("rollbacks", 0))
    return started


def _load_average(step: TrainStep, payload: dict, path: Path) -> None:
    """The saved moving average of the weights, where the run keeps one (``train.ema``);
    one switched on or off at this resume says so (a new one starts from the weights)."""
    average = step.average
    if average is None:
        if "ema_model" in payload:
            print(f"train.ema is off: the average of the weights in {path} is not carried on; "
                  "the run's checkpoint and figures from here are the trained weights'")
        return
    if "ema_model" not in payload:
        print(f"train.ema: {path} holds no average of the weights; it starts at step "
              f"{payload['step']} from the weights there")
        return
    average.module.load_state_dict(payload["ema_model"])
    average.n_averaged.fill_(payload["ema_updates"])


def _check_enough_data(cfg: Config, splits: Splits, resume: bool) -> None:
    """Enough training images for what the settings ask: ActNorm's initialisation (a fresh
    run) takes ``train.init_batch_size`` of them, and never fewer than MIN_INIT_IMAGES."""
    count, t = len(splits.train), cfg.train
    if count < MIN_INIT_IMAGES:
        carved = f" after data.val_size={len(splits.val)} went to validation"
        raise UserError(f"{cfg.data.name} leaves {count} training images{carved}; a run needs "
                        f"at least {MIN_INIT_IMAGES} (lower data.val_size or add images)")
    if not resume and t.init_batch_size > count:
        raise UserError(f"config key 'train.init_batch_size' ({t.init_batch_size}) asks for "
                        f"more images than the {count} training images; lower it to at most "
                        f"{count}")


def _check_batches_fit(cfg: Config, splits: Splits, device: torch.device) -> None:
    """Each batch a run takes, as float32 images alone, must fit the device's free memory."""
    t, image_bytes = cfg.train, 4 * math.prod(splits.image_shape)
    sizes = {"batch_size": t.batch_size,  # drawn with replacement: always whole
             "eval_batch_size": min(t.eval_batch_size, max(len(splits.val), len(splits.test))),
             "init_batch_size": min(t.init_batch_size, len(splits.train))}
    for key, images in sizes.items():
        require_memory(images * image_bytes, device, f"a batch of train.{key}={images} images",
                       f"lower train.{key}")


def class_count(cfg: Config, splits: Splits) -> int:
    """The classes a model of ``cfg`` conditions on (0: an unconditional model)."""
    return splits.class_count(cfg.data.name) if cfg.model.class_conditional else 0


def _fresh_model(cfg: Config, splits: Splits, device: torch.device) -> ImageFlow:
    """Every rank initialises from the same images; DDP then broadcasts rank 0's."""
    classes = class_count(cfg, splits)
    check_model_fits(cfg.model, splits.image_shape, device)
    flow = build_model(cfg.model, splits.image_shape, splits.num_levels,
                       cfg.data.permute_pixels, classes).to(device)
    initialize_actnorm(flow, splits.train, cfg.train.init_batch_size, device)
    return flow


def _with_optimiser(cfg: Config, flow: ImageFlow, splits: Splits, world: Distributed) -> Start:
    t = cfg.train
    optimizer = make_optimizer(flow, t.lr, t.weight_decay)
    inject = (t.inject_nan_every, t.inject_nan_steps) if t.inject_nan_every else None
    step = TrainStep(flow, optimizer, device=world.device, precision=t.precision,
                     grad_clip=t.grad_clip, compile=t.compile, seed=t.seed, world=world,
                     ema=t.ema, label_drop=cfg.model.drop_rate, inject_nan=inject)
    labels = splits.train.labels if flow.num_classes else None
    batches = BatchSampler(splits.train.images, t.batch_size, world.device, seed=t.seed + 1,
                           part=world.part, labels=labels)
    return Start(flow, step, batches, Progress())


def _check_same_run(cfg: Config, saved: Config, path: Path) -> None:
    for section, keys in SAME_RUN_KEYS.items():
        ours, theirs = vars(getattr(cfg, section)), vars(getattr(saved, section))
        named = (keys or ours.keys() | theirs.keys()) - WHERE_NOT_WHAT
        for key in sorted(named, key=lambda key: (key != "kind", key)):  # another kind first
            if ours.get(key) != theirs.get(key):
                raise UserError(
                    f"--resume: {section}.{key} is {ours.get(key)!r} but {path} was trained "
                    f"with {theirs.get(key)!r}"
                )
