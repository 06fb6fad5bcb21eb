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
from mixerflow.core.files import atomic_copy, atomic_write, atomic_write_text
from mixerflow.data.splits import image_shape_of
from mixerflow.models.flow import build_model, count_parameters
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
    if match_params:
        shape = image_shape_of(first.data)
        # the number of levels only sets the preprocessing, which has no parameters
        target = count_parameters(build_model(first.model, shape, num_levels=256))
        models = {name: model if name == first_name else match_width(model, shape, target)
                  for name, model in models.items()}
    return {name: dataclasses.replace(first, model=model) for name, model in models.items()}


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


def _bpd_cell(model: dict) -> str:
    runs = model["runs"]
    if len(runs) == 1:
        return f"{runs[0]['test_bpd']:.4f} ± {runs[0]['test_bpd_se']:.4f} (s.e.)"
    bpd = model["summary"]["test_bpd"]
    return f"{bpd['mean']:.4f} ± {bpd['std']:.4f} (std, {len(runs)} seeds)"


def _memory_cell(mean: dict, device: str) -> str:
    if device.startswith("cuda"):
        return f"{mean['peak_memory_mb']:.0f}"
    return f"{mean['peak_memory_mb']:.0f} (+{mean['train_memory_mb']:.0f})"


def report_markdown(report: dict, command: str) -> str:
    budget = (f"{report['budget_minutes']:g} minutes of training per model"
              if report["budget_minutes"] else f"{report['budget_steps']} steps per model")
    device = next(iter(report["models"].values()))["runs"][0]["device"]
    lines = [
        f"# {' vs '.join(report['models'])} on {report['data']}",
        "",
        f"Command: `{command}`",
        "",
        f"Budget: {budget}; batch {report['batch_size']}, Adam lr {report['lr']}, seeds "
        f"{', '.join(map(str, report['seeds']))}; device {device}. Test bits/dim over the whole "
        "test split. Peak memory: allocated CUDA memory on a GPU; on a CPU, the process's peak RSS "
        "(PyTorch runtime and data set included) and, in brackets, how far training raised it "
        "above the RSS once data and model were loaded. Wall time includes evaluation.",
        "",
        "| model | parameters | test bits/dim | train images/s | sample images/s "
        "| peak memory (MB) | steps | wall time (min) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, model in report["models"].items():
        mean = {key: value["mean"] for key, value in model["summary"].items()}
        lines.append(
            f"| {name} | {mean['num_params']:,.0f} | {_bpd_cell(model)} | "
            f"{mean['train_images_per_s']:.0f} | {mean['sample_images_per_s']:.0f} | "
            f"{_memory_cell(mean, device)} | {mean['step']:.0f} | "
            f"{mean.get('wall_s', float('nan')) / 60:.1f} |"
        )
    lines += ["", "![bits/dim against training time](bpd_vs_time.png)", ""]
    lines += [f"![{name} samples](samples_{name}.png)" for name in report["models"]]
    return "\n".join(lines) + "\n"


def validation_curve(run_dir: Path) -> tuple[list[float], list[float]]:
    """(seconds of training, validation bits/dim) from a run's ``metrics.jsonl``."""
    seconds, bpd = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "val_bpd" in record:
            seconds.append(record["elapsed_s"])
            bpd.append(record["val_bpd"])
    return seconds, bpd


def plot_bpd_vs_time(report: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for index, (name, model) in enumerate(report["models"].items()):
        for i, run in enumerate(model["runs"]):
            seconds, bpd = validation_curve(out_dir / "runs" / f"{name}_seed{run['seed']}")
            axis.plot(seconds, bpd, "o-", color=f"C{index}", markersize=3, alpha=0.8,
                      label=name if i == 0 else None)
            # the final test figure: a run stopped before its first validation still shows
            axis.plot(run["elapsed_s"], run["test_bpd"], "*", color=f"C{index}", markersize=9)
    axis.set_xlabel("training time (s)")
    axis.set_ylabel("bits/dim")
    axis.set_title(f"{report['data']}: validation (lines) and final test (stars) bits/dim")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    atomic_write(out_dir / "bpd_vs_time.png", lambda file: figure.savefig(file, format="png"))
    plt.close(figure)


def write_report(report: dict, out_dir: Path, command: str) -> None:
    """``report.json``, ``report.md``, ``bpd_vs_time.png`` and ``samples_<model>.png``."""
    report = {**report, "command": command}
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    markdown = report_markdown(report, command)
    atomic_write_text(out_dir / "report.md", markdown)
    plot_bpd_vs_time(report, out_dir)
    for name, model in report["models"].items():
        seed = model["runs"][0]["seed"]
        atomic_copy(out_dir / "runs" / f"{name}_seed{seed}" / "samples.png",
                    out_dir / f"samples_{name}.png")
    print(markdown)
