"""``mixerflow compare``: any number of models on the same data, splits, preprocessing,
optimiser, seeds and budget, their parameter counts matched to the first's.

Each training runs in its own process (so peak memory is that model's alone) and keeps
its run folder under ``OUT/runs/``: rerunning the same command resumes an interrupted
run and reuses finished ones. The report folder gets ``report.json``, ``report.md``,
``bpd_vs_time.png`` and a sample grid per model.
"""

import dataclasses
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mixerflow.core.errors import UserError
from mixerflow.core.files import atomic_write_text
from mixerflow.data.splits import image_shape_of, load_splits
from mixerflow.models.flow import build_transform, count_parameters
from mixerflow.models.sizing import match_width
from mixerflow.training.config import Config
from mixerflow.training.lifecycle import StopSignals

SUMMARY_KEYS = ("test_bpd", "num_params", "train_images_per_s", "sample_images_per_s",
                "peak_memory_mb", "train_memory_mb", "wall_s", "step")


def fair_configs(configs: dict[str, Config], match_params: bool = True) -> dict[str, Config]:
    """One config per model: data, training and logging from the first; each model section
    from its own config, its width matched to the first model's parameter count."""
    first_name, first = next(iter(configs.items()))
    models = {name: cfg.model for name, cfg in configs.items()}
    noisy = [name for name, model in models.items() if model.dequantization == "gaussian"]
    if noisy and len(noisy) < len(models):
        raise UserError(f"{', '.join(noisy)} {'models' if len(noisy) == 1 else 'model'} noisy "
                        "images (model.dequantization: gaussian), whose bits/dim are no bound "
                        "on the discrete likelihood the others give; compare them apart")
    if match_params:
        shape = image_shape_of(first.data)
        classes = (load_splits(first.data).class_count(first.data.name)
                   if any(model.class_conditional for model in models.values()) else 0)
        # the transforms' counts: a learned dequantizer is each model's own setting, and
        # match_width sizes the transform alone
        target = count_parameters(build_transform(
            first.model, shape, classes if first.model.class_conditional else 0))
        models = {name: model if name == first_name else
                  match_width(model, shape, target, classes)
                  for name, model in models.items()}
    return {name: dataclasses.replace(first, model=model) for name, model in models.items()}


def recipe_note(configs: dict[str, Config]) -> str | None:
    """A word where the models dequantize differently: their figures then differ by recipe
    as well as by architecture."""
    recipes = {name: cfg.model.dequantization for name, cfg in configs.items()}
    if len(set(recipes.values())) == 1:
        return None
    named = ", ".join(f"{name}: {recipe}" for name, recipe in recipes.items())
    return (f"note: the models dequantize differently ({named}), so their bits/dim differ by "
            "recipe as well as by model; model.dequantization=... sets one for all")


def conditioning_note(configs: dict[str, Config]) -> str | None:
    """A word where some models are class-conditional: their bits/dim are of ``p(x | y)``,
    at most ``log2(K) / D`` below the ``p(x)`` of the same model's class mixture."""
    conditional = [name for name, cfg in configs.items() if cfg.model.class_conditional]
    if not conditional:
        return None
    return (f"note: {', '.join(conditional)} {'is' if len(conditional) == 1 else 'are'} "
            "class-conditional: their bits/dim are of p(x | class), up to log2(classes) / "
            "dimensions below a bits/dim of p(x) (mixerflow classify gives the mixture's)")


def with_budget(cfg: Config, minutes: float | None, steps: int | None) -> Config:
    """``cfg`` trained for ``minutes`` of wall clock or ``steps`` steps (None: as configured)."""
    if minutes is not None and steps is not None:
        raise UserError("give --minutes or --steps, not both")
    train = cfg.train
    if minutes is not None:
        if minutes <= 0:
            raise UserError(f"--minutes must be positive, got {minutes}")
        train = dataclasses.replace(train, max_minutes=minutes, steps=10**9)
    elif steps is not None:
        if steps < 1:
            raise UserError(f"--steps must be at least 1, got {steps}")
        train = dataclasses.replace(train, steps=steps, max_minutes=None)
    return dataclasses.replace(cfg, train=train)


def run_training(cfg: Config, run_dir: Path, show_progress: bool) -> dict:
    """Train ``cfg`` in a child process with its run folder at ``run_dir``; its results."""
    cfg = dataclasses.replace(cfg, log=dataclasses.replace(cfg.log, out_dir=str(run_dir)))
    config_path = run_dir.with_suffix(".yaml")
    if config_path.exists() and _what(yaml.safe_load(config_path.read_text())) != _what(
        cfg.to_dict()
    ):
        raise UserError(
            f"{run_dir} holds a run with other settings ({config_path}); "
            "choose another --out or delete that folder"
        )
    results_path = run_dir / "results.json"
    if results_path.exists():
        print(f"compare: reusing the finished run in {run_dir}")
        return json.loads(results_path.read_text())
    atomic_write_text(config_path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    command = [sys.executable, "-m", "mixerflow.cli", "train", "--config", str(config_path)]
    if (run_dir / "checkpoint.pt").exists():
        command.append("--resume")
    if not show_progress:
        command.append("--no-progress")
    start = time.perf_counter()
    process = subprocess.Popen(command)
    # A stop signal sent to this process alone (kill PID) reaches the child as SIGTERM too;
    # one sent to the whole group (Ctrl-C, timeout, SLURM) reaches it twice, which it ignores.
    with StopSignals(then=lambda _: process.send_signal(signal.SIGTERM)) as stops:
        try:
            code = process.wait()
        except KeyboardInterrupt:  # Ctrl-C twice: the child was interrupted at once too
            code = process.wait()
    if stops.requested is not None:  # the child saved its checkpoint (or finished)
        raise UserError(f"stopped by {stops.requested}; rerun the same command to resume "
                        f"{run_dir}")
    if code != 0:
        raise UserError(
            f"training {run_dir.name} failed (exit {code}, its error is above); "
            f"rerun the same command to resume it from {run_dir}"
        )
    result = json.loads(results_path.read_text())
    result["wall_s"] = time.perf_counter() - start  # this process's share if it was resumed
    atomic_write_text(results_path, json.dumps(result, indent=2))
    return result


def _what(tree: dict) -> dict:
    """A run's settings without where its data lives (which may move between reruns)."""
    data = {k: v for k, v in tree["data"].items() if k not in ("root", "download")}
    return {**tree, "data": data}


def summarize(runs: list[dict]) -> dict:
    """Mean and standard deviation (over seeds) of each figure in :data:`SUMMARY_KEYS`."""
    summary = {}
    for key in SUMMARY_KEYS:
        values = [run[key] for run in runs if key in run]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[key] = {"mean": statistics.fmean(values), "std": std}
    return summary


def compare(
    configs: dict[str, Config], seeds: list[int], out_dir: Path, show_progress: bool = True
) -> dict:
    """Train every model of ``configs`` once per seed; write and return the report."""
    models = {}
    for name, cfg in configs.items():
        runs = []
        for seed in seeds:
            seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
            print(f"compare: training {name}, seed {seed}", flush=True)
            result = run_training(seeded, out_dir / "runs" / f"{name}_seed{seed}", show_progress)
            runs.append({"seed": seed, **result})
        models[name] = {"model": dataclasses.asdict(cfg.model), "runs": runs,
                        "summary": summarize(runs)}
    first = next(iter(configs.values()))
    return {
        "data": first.data.name, "budget_minutes": first.train.max_minutes,
        "budget_steps": None if first.train.max_minutes else first.train.steps,
        "batch_size": first.train.batch_size, "lr": first.train.lr, "seeds": seeds,
        "models": models,
    }
