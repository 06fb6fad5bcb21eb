"""The training loop: bits/dim objective, evaluation, checkpoints, resume, logging.

``train(cfg)`` reads top to bottom: data -> model -> ActNorm init -> steps (with
periodic validation and checkpoints) -> final test bits/dim -> sample grid.
"""

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from mixerflow.core.device import current_rss_mb, peak_memory_mb
from mixerflow.core.errors import LostPeer, UserError
from mixerflow.core.files import atomic_write_text
from mixerflow.data.images import Splits
from mixerflow.data.sampler import BatchSampler
from mixerflow.data.splits import load_splits
from mixerflow.models.flow import ImageFlow, build_model, count_parameters
from mixerflow.models.sizing import check_model_fits
from mixerflow.tools.sampling import save_grid
from mixerflow.training import distributed
from mixerflow.training.checkpoint import (
    MODEL_KEYS,
    TRAINING_KEYS,
    flow_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from mixerflow.training.config import Config
from mixerflow.training.distributed import Distributed
from mixerflow.training.evaluate import evaluate_bpd
from mixerflow.training.lifecycle import RunLock, StopSignals
from mixerflow.training.runlog import RunLog
from mixerflow.training.step import TrainStep, initialize_actnorm, make_optimizer, use_fused_adam


def learning_rate(cfg: Config, step: int, elapsed: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 over the run's budget."""
    t = cfg.train
    progress = step / t.steps
    if t.max_minutes is not None:
        progress = max(progress, elapsed / (60 * t.max_minutes))
    warmup = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else 1.0
    return t.lr * warmup * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class Progress:
    step: int = 0
    elapsed: float = 0.0  # seconds spent in training steps (evaluation excluded)
    lr_scale: float = 1.0  # halved at each roll-back after a run of non-finite steps
    rollbacks: int = 0

    def done(self, cfg: Config) -> bool:
        budget = cfg.train.max_minutes
        out_of_time = budget is not None and self.elapsed >= 60 * budget
        return self.step >= cfg.train.steps or out_of_time


MAX_BAD_IN_A_ROW = 10  # non-finite steps in a row before a roll-back
MAX_ROLLBACKS = 3
WHERE_NOT_WHAT = {"root", "download"}  # data keys that may change between resumes
SAME_RUN_KEYS = {"data": None, "model": None, "train": {"batch_size"}}  # None: every key


def _check_same_run(cfg: Config, saved: Config, path: Path) -> None:
    for section, keys in SAME_RUN_KEYS.items():
        ours, theirs = getattr(cfg, section).__dict__, getattr(saved, section).__dict__
        for key in (keys or ours.keys()) - WHERE_NOT_WHAT:
            if ours[key] != theirs[key]:
                raise UserError(
                    f"--resume: {section}.{key} is {ours[key]!r} but {path} was trained "
                    f"with {theirs[key]!r}"
                )


def _start_or_resume(cfg: Config, resume: bool, ckpt_path: Path, splits, world: Distributed):
    """The model (fresh with ActNorm initialised, or the checkpoint's), its training step,
    the batch sampler and the progress so far."""
    device = world.device
    if resume:
        payload = read_checkpoint(ckpt_path, MODEL_KEYS + TRAINING_KEYS)
        flow, saved_cfg = flow_from_checkpoint(payload, ckpt_path)
        _check_same_run(cfg, saved_cfg, ckpt_path)
        flow.to(device)
    else:  # every rank initialises from the same images; DDP then broadcasts rank 0's
        check_model_fits(cfg.model, splits.image_shape, device)
        flow = build_model(cfg.model, splits.image_shape, splits.num_levels,
                           cfg.data.permute_pixels).to(device)
        initialize_actnorm(flow, splits.train, cfg.train.init_batch_size, device)
    t = cfg.train
    optimizer = make_optimizer(flow, t.lr, t.weight_decay)
    inject = (t.inject_nan_every, t.inject_nan_steps) if t.inject_nan_every else None
    step = TrainStep(flow, optimizer, device=device, precision=t.precision,
                     grad_clip=t.grad_clip, compile=t.compile, seed=t.seed, world=world,
                     inject_nan=inject)
    batches = BatchSampler(splits.train.images, t.batch_size, device, seed=t.seed + 1,
                           part=world.part)
    if not resume:
        return flow, step, batches, Progress()
    try:
        optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng"])
        if "step_state" in payload:  # checkpoints before the device-side generators lack these
            step.load_state_dict(payload["step_state"])
            batches.load_state_dict(payload["batch_state"])
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise UserError(f"--resume: {ckpt_path} is damaged: its training state does not "
                        f"load ({' '.join(str(err).split())[:200]})") from None
    use_fused_adam(optimizer)
    return flow, step, batches, Progress(payload["step"], payload["elapsed"],
                                         payload.get("lr_scale", 1.0),
                                         payload.get("rollbacks", 0))


def _claim_run_folder(cfg: Config, resume: bool, world: Distributed) -> RunLock | None:
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


def train(cfg: Config, resume: bool = False, show_progress: bool = True) -> dict:
    """Train the model ``cfg`` describes; returns the final metrics (test bits/dim …).

    Under torchrun every process calls this; they share the global batch
    ``train.batch_size`` and only the main process writes the run folder.
    """
    world = distributed.setup(cfg.train.device, cfg.train.dist_timeout_minutes)
    try:
        lock = _claim_run_folder(cfg, resume, world)
        try:
            return _train(cfg, resume, show_progress and world.is_main, world)
        except RuntimeError as err:
            if not distributed.lost_a_peer(world, err):
                raise
            reason = str(err).splitlines()[0][-160:]
            raise LostPeer(f"lost contact with another process (it died, or the network "
                            f"failed: {reason}); the last checkpoint in {cfg.log.out_dir} is "
                            "kept (continue with --resume)") from None
        finally:
            if lock is not None:
                lock.release()
    finally:
        distributed.teardown(world)


@dataclass
class Run:
    """What the loop works with; ``log`` and every file write belong to the main rank."""

    cfg: Config
    world: Distributed
    flow: ImageFlow
    step: TrainStep
    batches: BatchSampler
    progress: Progress
    splits: Splits
    log: RunLog | None
    good_state: dict = field(init=False)  # model and optimizer to roll back to

    def __post_init__(self) -> None:
        self.remember_good_state()  # the start (fresh or resumed) is the first one

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.log.out_dir)

    def remember_good_state(self) -> None:
        self.good_state = {"model": _cpu_copy(self.flow.state_dict()),
                           "optimizer": _cpu_copy(self.step.optimizer.state_dict())}

    def checkpoint(self) -> None:
        """Save the training state at a step boundary (every rank must call it); a run of
        non-finite steps is first rolled back, so no checkpoint holds a diverged model."""
        if self.stay_healthy() == 0:  # the last step was finite: a state to come back to
            self.remember_good_state()
        if not self.world.is_main:
            return
        try:
            save_checkpoint(
                self.run_dir / "checkpoint.pt", self.flow, self.cfg,
                optimizer=self.step.optimizer.state_dict(), step=self.progress.step,
                elapsed=self.progress.elapsed, rng=torch.get_rng_state(),
                step_state=self.step.state_dict(), batch_state=self.batches.state_dict(),
                lr_scale=self.progress.lr_scale, rollbacks=self.progress.rollbacks,
            )
        except UserError as err:  # a full disk: say what the run folder still holds
            raise UserError(f"{err}; step {self.progress.step} was not saved") from None

    def stay_healthy(self) -> int:
        """Log the steps skipped for non-finite losses; after MAX_BAD_IN_A_ROW in a row, go
        back to the last healthy checkpoint's model with half the learning rate, at most
        MAX_ROLLBACKS times, then stop with a UserError (every rank calls this). Returns the
        non-finite steps in a row that remain."""
        skipped, in_a_row = self.step.health()
        if skipped:
            self.say(f"step {self.progress.step}: skipped {skipped} step(s) with a non-finite "
                     "loss or gradient")
            self.record({"skipped_steps": skipped})
        if in_a_row < MAX_BAD_IN_A_ROW:
            return in_a_row
        saved = self.run_dir / "checkpoint.pt"
        kept = "the last checkpoint is kept" if saved.exists() else "no checkpoint was written"
        if self.progress.rollbacks >= MAX_ROLLBACKS:
            raise UserError(
                f"training diverged: {in_a_row} non-finite steps in a row at step "
                f"{self.progress.step} after {self.progress.rollbacks} roll-back(s) with a "
                f"halved learning rate; {kept}; try a lower train.lr or train.grad_clip")
        self.flow.load_state_dict(self.good_state["model"])
        self.step.optimizer.load_state_dict(self.good_state["optimizer"])  # still fused
        self.step.bad_in_a_row.zero_()
        self.progress.lr_scale /= 2
        self.progress.rollbacks += 1
        self.say(f"step {self.progress.step}: {in_a_row} non-finite steps in a row; rolled back "
                 f"to the last healthy state, learning rate x{self.progress.lr_scale:g}")
        self.record({"rollback": self.progress.rollbacks, "lr_scale": self.progress.lr_scale})
        return 0

    def say(self, text: str) -> None:
        if self.world.is_main:
            tqdm.write(text)

    def record(self, values: dict) -> None:
        if self.log:
            self.log.log({"step": self.progress.step, **values,
                          "elapsed_s": self.progress.elapsed})


def _cpu_copy(state: dict) -> dict:
    """A deep copy of a (nested) state dict with its tensors on the CPU."""
    if isinstance(state, dict):
        return {key: _cpu_copy(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_cpu_copy(value) for value in state]
    return state.detach().to("cpu", copy=True) if isinstance(state, torch.Tensor) else state


def _train(cfg: Config, resume: bool, show_progress: bool, world: Distributed) -> dict:
    run_dir = Path(cfg.log.out_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    if world.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(world.device)
    splits = load_splits(cfg.data)

    flow, step, batches, progress = _start_or_resume(
        cfg, resume, run_dir / "checkpoint.pt", splits, world)
    memory_at_start = 0.0 if world.device.type == "cuda" else current_rss_mb()
    if world.is_main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        processes = f" x {world.world_size} processes" if world.grouped else ""
        print(f"{cfg.model.kind}: {count_parameters(flow):,} parameters; {len(splits.train)} "
              f"train images {splits.image_shape} on {world.device}{processes}")
    log = RunLog(run_dir, cfg, progress.step if resume else None) if world.is_main else None
    run = Run(cfg, world, flow, step, batches, progress, splits, log)
    try:
        _run_steps(run, show_progress)
        run.checkpoint()
        result = _test_result(run, memory_at_start)
        if world.is_main:
            _finish_run(cfg, flow, run_dir, result, run.log)
            print(f"test bits/dim {result['test_bpd']:.4f} ± {result['test_bpd_se']:.4f} over "
                  f"{len(splits.test)} images after {progress.step} steps "
                  f"({progress.elapsed / 60:.1f} min, {result['train_images_per_s']:.0f} "
                  f"images/s); run folder {run_dir}")
        return result
    finally:
        if run.log:
            run.log.close()


def _run_steps(run: Run, show_progress: bool) -> None:
    """Train until the step or time budget ends, validating, logging and checkpointing on
    schedule; a stop signal ends it at a step boundary with a checkpoint and a UserError."""
    cfg, world, progress, step = run.cfg, run.world, run.progress, run.step
    bar = tqdm(total=cfg.train.steps, initial=progress.step, disable=not show_progress,
               dynamic_ncols=True)
    window_images, window_time = 0, 0.0
    stops = StopSignals()
    try:
        with stops:
            while not progress.done(cfg):
                start = time.perf_counter()
                lr = learning_rate(cfg, progress.step, progress.elapsed) * progress.lr_scale
                loss = step(run.batches(), progress.step, lr)
                logging = (progress.step + 1) % cfg.train.log_every == 0
                if logging:  # the only host synchronisation, inside the timed span
                    run.stay_healthy()
                    train_bpd = world.sum([loss.item()])[0] / world.world_size
                    grad_norm = step.grad_norm.item()
                spent = time.perf_counter() - start
                progress.step += 1
                stop, progress.elapsed = world.agree(stops.requested is not None,
                                                     progress.elapsed + spent)
                window_images += cfg.train.batch_size
                window_time += spent
                bar.update(1)
                if logging:
                    speed = window_images / window_time
                    bar.set_postfix(bpd=f"{train_bpd:.3f}", img_s=f"{speed:.0f}", refresh=False)
                    run.record({"train_bpd": train_bpd, "lr": lr, "grad_norm": grad_norm,
                                "images_per_s": speed})
                    window_images, window_time = 0, 0.0
                if progress.step % cfg.train.eval_every == 0:
                    run.stay_healthy()
                    val_bpd, val_se = evaluate_bpd(run.flow, run.splits.val,
                                                   cfg.train.eval_batch_size, world=world)
                    run.say(f"step {progress.step}: val bits/dim {val_bpd:.4f} ± {val_se:.4f}")
                    run.record({"val_bpd": val_bpd, "val_bpd_se": val_se})
                if progress.step % cfg.train.checkpoint_every == 0 or stop:
                    run.checkpoint()
                if stop:
                    signal_name = stops.requested or "a stop request to another process"
                    raise UserError(
                        f"stopped by {signal_name} at step {progress.step}; checkpoint saved "
                        f"to {run.run_dir / 'checkpoint.pt'} (continue with --resume)")
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep what is on disk
        raise UserError(f"interrupted during step {progress.step + 1}; not saved (the last "
                        f"checkpoint in {run.run_dir}, if any, is kept)") from None
    finally:
        bar.close()


def _test_result(run: Run, memory_at_start: float) -> dict:
    """Test bits/dim over the whole test split (sharded), speed and memory, as results.json."""
    cfg, progress, device = run.cfg, run.progress, run.world.device
    test_bpd, test_se = evaluate_bpd(run.flow, run.splits.test, cfg.train.eval_batch_size,
                                     world=run.world)
    peak_memory = peak_memory_mb(device)
    return {
        "model": cfg.model.kind, "step": progress.step, "test_bpd": test_bpd,
        "test_bpd_se": test_se, "num_params": count_parameters(run.flow),
        "elapsed_s": progress.elapsed,
        "train_images_per_s": progress.step * cfg.train.batch_size / max(progress.elapsed, 1e-9),
        "peak_memory_mb": peak_memory,
        # CPU: how far training raised the peak RSS above the RSS with data and model loaded
        "train_memory_mb": peak_memory - memory_at_start, "device": str(device),
        "processes": run.world.world_size,
    }


def _finish_run(cfg: Config, flow: ImageFlow, run_dir: Path, result: dict, log: RunLog) -> None:
    """Main rank: the sample grid (timed into ``result``), ``results.json`` and the log."""
    generator = torch.Generator().manual_seed(cfg.train.seed)
    start = time.perf_counter()
    samples = flow.sample(cfg.log.num_samples, cfg.log.temperature, generator=generator)
    result["sample_images_per_s"] = cfg.log.num_samples / (time.perf_counter() - start)
    save_grid(samples, flow.num_levels, run_dir / "samples.png")
    log.log(result)
    atomic_write_text(run_dir / "results.json", json.dumps(result, indent=2))
