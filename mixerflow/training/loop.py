"""The training loop, read top to bottom.

:func:`train` claims the run folder and joins the processes; the run then loads the data,
starts from a fresh model or the checkpoint, and repeats one step with its phases

    step (one optimiser step, timed)  ->  log  ->  evaluate  ->  checkpoint  ->  stop

until the step or time budget ends, then writes the test bits/dim over the whole test split
and a sample grid. The host waits for the device only in :meth:`Run.synchronize`, at most
once a step and only when a phase needs a figure; that is also the one place that rolls the
model back after a run of non-finite steps.
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
from mixerflow.data.splits import load_splits
from mixerflow.models.flow import count_parameters
from mixerflow.tools.sampling import save_grid
from mixerflow.training import distributed
from mixerflow.training.checkpoint import save_checkpoint
from mixerflow.training.config import Config, TrainConfig
from mixerflow.training.distributed import Distributed
from mixerflow.training.evaluate import evaluate_bpd
from mixerflow.training.lifecycle import StopSignals
from mixerflow.training.runlog import RunLog
from mixerflow.training.start import (
    Start,
    claim_run_folder,
    finished_result,
    read_run_checkpoint,
    start,
    with_run_data_root,
)

MAX_BAD_IN_A_ROW = 10  # non-finite steps in a row before a roll-back
MAX_ROLLBACKS = 3


def train(cfg: Config, resume: bool = False, show_progress: bool = True) -> dict:
    """Train the model ``cfg`` describes; returns the final metrics (test bits/dim …).

    Under torchrun every process calls this; they share the global batch
    ``train.batch_size`` and only the main process writes the run folder.
    """
    world = distributed.setup(cfg.train.device, cfg.train.dist_timeout_minutes)
    try:
        lock = claim_run_folder(cfg, resume, world)
        try:
            return _run(cfg, resume, show_progress and world.is_main, world)
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


def _run(cfg: Config, resume: bool, show_progress: bool, world: Distributed) -> dict:
    """One process's part of the run: data, start, the steps, the test and the samples."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    if world.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(world.device)
    payload = read_run_checkpoint(cfg) if resume else None
    if payload is not None:
        done = finished_result(cfg, payload)
        if done is not None:  # a resume writes only when it trains
            if world.is_main:
                print(f"{cfg.log.out_dir} is already trained to step {payload['step']}, its "
                      f"budget; nothing to do (raise train.steps or train.max_minutes to train "
                      f"on). Its test bits/dim: {done['test_bpd']:.4f}")
            return done
        cfg = with_run_data_root(cfg, payload)
    splits = load_splits(cfg.data)
    started = start(cfg, splits, world, payload)
    run = Run(cfg, world, splits, started)
    run.open_log(resumed=resume)
    try:
        run.train_steps(show_progress)
        result = run.test_result()
        run.finish(result)
        return result
    finally:
        if run.log:
            run.log.close()


@dataclass
class Run:
    """What the loop works with; ``log`` and every file write belong to the main rank."""

    cfg: Config
    world: Distributed
    splits: Splits
    started: Start
    log: RunLog | None = None
    memory_at_start: float = 0.0  # CPU: the RSS with data and model loaded
    stop: bool = False  # a stop was requested (on any rank) during the last step
    last: bool = False  # the last step of the run (the budget is spent, or a stop)
    synced_at: int = -1  # the step the host last read the device's figures at
    healthy: bool = True  # the last synchronised step was finite
    good_state: dict = field(init=False)  # model and optimizer to roll back to

    def __post_init__(self) -> None:
        self.flow, self.step = self.started.flow, self.started.step
        self.batches, self.progress = self.started.batches, self.started.progress
        self.run_dir = Path(self.cfg.log.out_dir)
        self.window = [0, 0.0]  # images and seconds since the last logged step
        self.remember_good_state()  # the start (fresh or resumed) is the first one

    def open_log(self, resumed: bool) -> None:
        """Main rank: the run's config.yaml, a line about the run, and its metrics log."""
        on_cuda = self.world.device.type == "cuda"
        self.memory_at_start = 0.0 if on_cuda else current_rss_mb()
        if not self.world.is_main:
            return
        # the log first: a damaged metrics log stops the resume before anything is written
        self.log = RunLog(self.run_dir, self.cfg, self.progress.step if resumed else None)
        atomic_write_text(self.run_dir / "config.yaml",
                          yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        processes = f" x {self.world.world_size} processes" if self.world.grouped else ""
        print(f"{self.cfg.model.kind}: {count_parameters(self.flow):,} parameters; "
              f"{len(self.splits.train)} train images {self.splits.image_shape} on "
              f"{self.world.device}{processes}")
        note = average_horizon_note(self.cfg.train)
        if note:
            print(note)

    def train_steps(self, show_progress: bool) -> None:
        """Steps until the budget ends, each followed by its phases; a stop signal ends the
        run at a step boundary with a checkpoint and a UserError."""
        bar = tqdm(total=self.cfg.train.steps, initial=self.progress.step,
                   disable=not show_progress, dynamic_ncols=True)
        try:
            with StopSignals() as stops:
                self.last = self.progress.done(self.cfg)  # a resumed run may be done already
                while not self.last:
                    loss, lr = self.take_step(stops)
                    bar.update(1)
                    self.log_phase(loss, lr, bar)
                    self.evaluate_phase()
                    self.checkpoint_phase()
                    self.stop_phase(stops)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep what is on disk
            raise UserError(f"interrupted during step {self.progress.step + 1}; not saved (the "
                            f"last checkpoint in {self.run_dir}, if any, is kept)") from None
        finally:
            bar.close()

    def take_step(self, stops: StopSignals) -> tuple[torch.Tensor, float]:
        """One optimiser step, timed; a logged step's figures are read inside the timed span
        (the device's queued work counts). Every rank then agrees on the stop and the clock."""
        progress, started = self.progress, time.perf_counter()
        lr = learning_rate(self.cfg, progress.step, progress.elapsed) * progress.lr_scale
        images, labels = self.batches()
        loss = self.step(images, progress.step, lr, labels)
        if self.is_due(self.cfg.train.log_every, progress.step + 1):
            self.synchronize(progress.step + 1)
        spent = time.perf_counter() - started
        progress.step += 1
        self.stop, progress.elapsed = self.world.agree(stops.requested is not None,
                                                       progress.elapsed + spent)
        self.last = self.stop or progress.done(self.cfg)
        self.window = [self.window[0] + self.cfg.train.batch_size, self.window[1] + spent]
        return loss, lr

    def log_phase(self, loss: torch.Tensor, lr: float, bar: tqdm) -> None:
        if not self.is_due(self.cfg.train.log_every):
            return
        train_bpd = self.world.sum([loss.item()])[0] / self.world.world_size
        speed = self.window[0] / self.window[1]
        bar.set_postfix(bpd=f"{train_bpd:.3f}", img_s=f"{speed:.0f}", refresh=False)
        self.record({"train_bpd": train_bpd, "lr": lr, "grad_norm": self.step.grad_norm.item(),
                     "images_per_s": speed})
        self.window = [0, 0.0]

    def evaluate_phase(self) -> None:
        if not self.is_due(self.cfg.train.eval_every):
            return
        self.synchronize(self.progress.step)
        figures, text = {}, []
        for suffix, flow in self.evaluated().items():
            bpd, se = evaluate_bpd(flow, self.splits.val, self.cfg.train.eval_batch_size,
                                   world=self.world)
            figures |= {f"val_bpd{suffix}": bpd, f"val_bpd{suffix}_se": se}
            text.append(f"{bpd:.4f} ± {se:.4f}")
        raw = f" (trained weights {text[1]})" if len(text) > 1 else ""
        self.say(f"step {self.progress.step}: val bits/dim {text[0]}{raw}")
        self.record(figures)

    def evaluated(self) -> dict[str, torch.nn.Module]:
        """The weights each figure is reported for, by the suffix of its name: the moving
        average (``train.ema``) under the plain name and the trained weights under
        ``_raw``, or the trained weights alone."""
        average = self.step.average
        return {"": self.flow} if average is None else {"": average.module, "_raw": self.flow}

    def checkpoint_phase(self) -> None:
        """On schedule, at a stop and at the end of the budget (every rank takes part)."""
        if self.last or self.is_due(self.cfg.train.checkpoint_every):
            self.checkpoint()

    def stop_phase(self, stops: StopSignals) -> None:
        if self.stop:
            signal_name = stops.requested or "a stop request to another process"
            raise UserError(f"stopped by {signal_name} at step {self.progress.step}; checkpoint "
                            f"saved to {self.run_dir / 'checkpoint.pt'} (continue with --resume)")

    def is_due(self, every: int, step: int | None = None) -> bool:
        return (self.progress.step if step is None else step) % every == 0

    def checkpoint(self) -> None:
        """Save the training state; after a finite step it is also the state a roll-back
        returns to, and a diverged model is rolled back first, so no checkpoint holds one."""
        self.synchronize(self.progress.step)
        if self.healthy:
            self.remember_good_state()
        if not self.world.is_main:
            return
        progress = self.progress
        try:
            save_checkpoint(
                self.run_dir / "checkpoint.pt", self.flow, self.cfg,
                optimizer=self.step.optimizer.state_dict(), step=progress.step,
                elapsed=progress.elapsed, rng=torch.get_rng_state(),
                step_state=self.step.state_dict(), batch_state=self.batches.state_dict(),
                lr_scale=progress.lr_scale, rollbacks=progress.rollbacks, **self.saved_average(),
            )
        except UserError as err:  # a full disk: say what the run folder still holds
            raise UserError(f"{err}; step {progress.step} was not saved") from None

    def saved_average(self) -> dict:
        """The checkpoint's fields for the moving average of the weights, if the run keeps one."""
        average = self.step.average
        if average is None:
            return {}
        return {"ema_model": average.module.state_dict(), "ema_updates": int(average.n_averaged)}

    def synchronize(self, step: int) -> None:
        """Read the device's health figures once for ``step`` (every rank calls this at the
        same steps): log skipped steps, and roll back after too many in a row."""
        if self.synced_at == step:
            return
        self.synced_at = step
        skipped, in_a_row = self.step.health()
        if skipped:
            self.say(f"step {step}: skipped {skipped} step(s) with a non-finite loss or gradient")
            self.record({"skipped_steps": skipped})
        self.healthy = in_a_row == 0
        if in_a_row >= MAX_BAD_IN_A_ROW:
            self.roll_back_after_divergence(in_a_row)

    def roll_back_after_divergence(self, in_a_row: int) -> None:
        """Go back to the last healthy state with half the learning rate, at most
        MAX_ROLLBACKS times, then stop with a UserError."""
        progress = self.progress
        saved = self.run_dir / "checkpoint.pt"
        kept = "the last checkpoint is kept" if saved.exists() else "no checkpoint was written"
        if progress.rollbacks >= MAX_ROLLBACKS:
            raise UserError(
                f"training diverged: {in_a_row} non-finite steps in a row at step "
                f"{progress.step} after {progress.rollbacks} roll-back(s) with a halved "
                f"learning rate; {kept}; try a lower train.lr or train.grad_clip")
        self.flow.load_state_dict(self.good_state["model"])
        self.step.optimizer.load_state_dict(self.good_state["optimizer"])  # still fused
        if self.step.average is not None:
            self.step.average.load_state_dict(self.good_state["average"])
        self.step.bad_in_a_row.zero_()
        progress.lr_scale /= 2
        progress.rollbacks += 1
        self.healthy = True
        self.say(f"step {progress.step}: {in_a_row} non-finite steps in a row; rolled back to "
                 f"the last healthy state, learning rate x{progress.lr_scale:g}")
        self.record({"rollback": progress.rollbacks, "lr_scale": progress.lr_scale})

    def remember_good_state(self) -> None:
        average = self.step.average
        self.good_state = {"model": _cpu_copy(self.flow.state_dict()),
                           "optimizer": _cpu_copy(self.step.optimizer.state_dict()),
                           "average": _cpu_copy(average.state_dict()) if average else None}

    def test_result(self) -> dict:
        """Test bits/dim over the whole test split (sharded), speed and memory; with
        ``train.ema`` the figure is the average's and ``test_bpd_raw`` the trained weights'."""
        cfg, progress, device = self.cfg, self.progress, self.world.device
        figures = {}
        for suffix, flow in self.evaluated().items():
            bpd, se = evaluate_bpd(flow, self.splits.test, cfg.train.eval_batch_size,
                                   world=self.world)
            figures |= {f"test_bpd{suffix}": bpd, f"test_bpd{suffix}_se": se}
        peak_memory = peak_memory_mb(device)
        images_per_s = progress.step * cfg.train.batch_size / max(progress.elapsed, 1e-9)
        meaning = self.flow.bpd_meaning()
        return {
            "model": cfg.model.kind, "step": progress.step, **figures,
            **({"bits_per_dim_of": meaning} if meaning else {}),
            "num_params": count_parameters(self.flow),
            "elapsed_s": progress.elapsed, "train_images_per_s": images_per_s,
            "peak_memory_mb": peak_memory,
            # CPU: how far training raised the peak RSS above the RSS with data and model loaded
            "train_memory_mb": peak_memory - self.memory_at_start, "device": str(device),
            "processes": self.world.world_size,
        }

    def finish(self, result: dict) -> None:
        """Main rank: the sample grid (timed into ``result``), ``results.json``, the log."""
        if not self.world.is_main:
            return
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.train.seed)
        started = time.perf_counter()
        classes = self.flow.num_classes  # class-conditional: column k shows class k
        labels = torch.arange(cfg.log.num_samples) % classes if classes else None
        samples = self.evaluated()[""].sample(cfg.log.num_samples, cfg.log.temperature,
                                              generator=generator, labels=labels)
        result["sample_images_per_s"] = cfg.log.num_samples / (time.perf_counter() - started)
        save_grid(samples, self.flow.num_levels, self.run_dir / "samples.png",
                  nrow=classes or None)
        self.log.log(result)
        atomic_write_text(self.run_dir / "results.json", json.dumps(result, indent=2))
        raw = (f" (trained weights {result['test_bpd_raw']:.4f}; the figure is the "
               "weights' moving average's)" if "test_bpd_raw" in result else "")
        meaning = self.flow.bpd_meaning()
        print(f"test bits/dim {result['test_bpd']:.4f} ± {result['test_bpd_se']:.4f}{raw}"
              f"{' ' + meaning if meaning else ''} "
              f"over {len(self.splits.test)} images after {self.progress.step} steps "
              f"({self.progress.elapsed / 60:.1f} min, {result['train_images_per_s']:.0f} "
              f"images/s); run folder {self.run_dir}")

    def say(self, text: str) -> None:
        if self.world.is_main:
            tqdm.write(text)

    def record(self, values: dict) -> None:
        if self.log:
            self.log.log({"step": self.progress.step, **values,
                          "elapsed_s": self.progress.elapsed})


def learning_rate(cfg: Config, step: int, elapsed: float) -> float:
    """Linear warm-up, then cosine decay to 0, on the share of the budget that binds
    (``progress``: the larger of step / steps and elapsed / max_minutes). The warm-up ends
    after ``warmup_steps`` steps or ``warmup_fraction`` of the budget, whichever comes
    first, so under a time budget a slow model warms up for the same share of it as a fast
    one instead of spending its few steps below its rate."""
    t = cfg.train
    progress = step / t.steps
    if t.max_minutes is not None:
        progress = max(progress, elapsed / (60 * t.max_minutes))
    warmup = 1.0
    if t.warmup_steps and t.warmup_fraction:
        warmup = min(1.0, max((step + 1) / t.warmup_steps, progress / t.warmup_fraction))
    return t.lr * warmup * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def average_horizon_note(t: TrainConfig) -> str | None:
    """A word where ``train.ema`` averages over more than a tenth of ``train.steps`` (a run
    that a time budget ends sooner has fewer): such an average still holds early weights at
    the end (MNIST, 3,000 steps: 0.999 scored 2.85 bits/dim where the trained weights scored
    1.69; 0.99 scored as they did)."""
    if t.ema is None:
        return None
    horizon = 1 / (1 - t.ema)
    if horizon <= t.steps / 10:
        return None
    return (f"note: train.ema={t.ema} averages over the last ~{horizon:,.0f} steps, "
            f"{horizon / t.steps:.0%} of train.steps={t.steps:,}; the average will hold weights "
            "from early training and may score far worse than the trained weights "
            "(val_bpd_raw): keep 1/(1 - decay) under a tenth of the steps")


def _cpu_copy(state: dict) -> dict:
    """A deep copy of a (nested) state dict with its tensors on the CPU."""
    if isinstance(state, dict):
        return {key: _cpu_copy(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_cpu_copy(value) for value in state]
    return state.detach().to("cpu", copy=True) if isinstance(state, torch.Tensor) else state
