"""The reports of the experiments: markdown tables, plots and JSON for ``bench``,
``compare`` and the campaign, each written atomically into its report folder."""

import json
from pathlib import Path

from mixerflow.core.files import atomic_copy, atomic_write, atomic_write_text
from mixerflow.experiments.bench import bench_model
from mixerflow.experiments.counting import flops_text
from mixerflow.models.flow import count_parameters
from mixerflow.training.config import Config

HEADLINE = ("mixerflow", "compiled", "bf16")  # the figure the campaign is run for


def benchmark_markdown(report: dict, command: str) -> str:
    lines = [
        "# Benchmark: time per training image and peak memory",
        "",
        f"Command: `{command}`",
        "",
        f"Device {report['device']}, batch {report['batch_size']}, "
        f"{report['steps']} timed steps after one warm-up, random 8-bit images. Peak memory: "
        "allocated CUDA memory on a GPU; on a CPU, the rise of the "
        "peak RSS during training above the process's RSS after building the model.",
        "",
        "Ops per step: `aten` counts every aten event torch.profiler records in one training "
        "step (nested calls and views included; on a CPU the multi-tensor optimizer ops loop "
        "over the parameters inside), `of which objective` those of the loss's forward and "
        "backward; `kernels` counts the aten ops a dispatch mode "
        "sees that run a kernel (eager only). FLOPs per image: torch.utils.flop_counter on one "
        "step (forward and backward). MFU: achieved FLOP/s over a large matrix product's FLOP/s "
        "on the same device, in float32 for fp32 rows and the faster of bf16 and float32 for "
        "bf16 rows (their flow arithmetic runs in float32). First step: compile time for "
        "compiled rows.",
        "",
        "| model | image | parameters | mode | precision | ms / image | images / s "
        "| aten ops / step | of which objective | kernels / step | GFLOP / image | MFU "
        "| first step (s) | peak memory (MB) |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        _, height, width = row["image_shape"]
        kernels = row["kernel_ops_per_step"]
        lines.append(
            f"| {row['name']} | {height}x{width} | {row['num_params']:,} | {row['mode']} | "
            f"{row['precision']} | {row['ms_per_image']:.3f} | {row['images_per_s']:.1f} | "
            f"{row['aten_ops_per_step']:,} | {row['objective_aten_ops']:,} | "
            f"{'' if kernels is None else f'{kernels:,}'} | "
            f"{row['flops_per_image'] / 1e9:.3f} | {100 * row['mfu']:.1f} % | "
            f"{row['first_step_s']:.1f} | {row['peak_memory_mb']:.0f} |"
        )
    if len(report["shapes"]) > 1:
        lines += ["", "Fitted exponents (quantity ∝ pixels^exponent, least squares on log-log):",
                  "", "| model | time per image | peak memory |", "|---|---:|---:|"]
        for name, fit in report["exponents"].items():
            lines.append(f"| {name} | {fit['time']:.2f} | {fit['memory']:.2f} |")
    return "\n".join(lines) + "\n"


def plot_scaling(report: dict, path: Path) -> None:
    """Log-log plot of ms/image and peak memory against pixels, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, fit in report["exponents"].items():
        mine = [row for row in report["rows"] if row["name"] == name]
        pixels = [row["pixels"] for row in mine]
        axes[0].loglog(pixels, [row["ms_per_image"] for row in mine], "o-",
                       label=f"{name} (exponent {fit['time']:.2f})")
        axes[1].loglog(pixels, [max(row["peak_memory_mb"], 1e-3) for row in mine], "o-",
                       label=f"{name} (exponent {fit['memory']:.2f})")
    for axis, label in zip(axes, ("ms per training image", "peak memory (MB)"), strict=True):
        axis.set_xlabel("pixels per image (H x W)")
        axis.set_ylabel(label)
        axis.legend()
        axis.grid(True, which="both", alpha=0.3)
    figure.suptitle(f"Scaling with resolution ({report['device']}, batch {report['batch_size']})")
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120))
    plt.close(figure)


def write_benchmark(report: dict, out_dir: Path, command: str) -> None:
    """``report.json``, ``report.md`` and, for several shapes, ``scaling.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {**report, "command": command}
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    markdown = benchmark_markdown(report, command)
    atomic_write_text(out_dir / "report.md", markdown)
    if len(report["shapes"]) > 1:
        plot_scaling(report, out_dir / "scaling.png")
    print(markdown)


def _bpd_cell(model: dict) -> str:
    """The test bits/dim and its spread, with what they are of where that is not the
    discrete bound (given the class, or of noisy images)."""
    runs = model["runs"]
    meaning = f" {runs[0]['bits_per_dim_of']}" if "bits_per_dim_of" in runs[0] else ""
    if len(runs) == 1:
        return f"{runs[0]['test_bpd']:.4f} ± {runs[0]['test_bpd_se']:.4f} (s.e.){meaning}"
    bpd = model["summary"]["test_bpd"]
    return f"{bpd['mean']:.4f} ± {bpd['std']:.4f} (std, {len(runs)} seeds){meaning}"


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


def headline_row(report: dict) -> dict | None:
    """The bench row of the bf16 compiled MixerFlow step, if it was measured."""
    for row in report["rows"]:
        if (row["name"], row["mode"], row["precision"]) == HEADLINE:
            return row
    return None


def summary_markdown(
    summary: dict, configs: dict[str, Config], shape: tuple[int, int, int], command: str
) -> str:
    lines = ["# GPU campaign" + (" (smoke run)" if summary["smoke"] else ""), "",
             f"Command: `{command}`", ""]
    if "bench" in summary:
        report = summary["bench"]
        row = headline_row(report)
        if row is not None:
            achieved, peak = row["achieved_flops_per_s"], row["peak_flops_per_s"]
            lines += [f"**Headline: the bf16 compiled MixerFlow training step runs at "
                      f"{100 * row['mfu']:.1f} % MFU** ({flops_text(achieved)}"
                      f" of {flops_text(peak)}, the faster of a bf16 and a float32 "
                      f"matrix product) on {report['device']}, {row['images_per_s']:.0f} "
                      f"images/s at batch {report['batch_size']}.", ""]
        lines += ["Bench: [bench/report.md](bench/report.md)", ""]
    if "compare" in summary:
        lines += ["Comparison: [compare/report.md](compare/report.md)", ""]
    params = ", ".join(f"{name} {count_parameters(bench_model(cfg.model, shape)):,}"
                       for name, cfg in configs.items())
    lines += [f"Parameters: {params} (Glow's width matched to MixerFlow's parameter count, "
              f"hidden_channels {configs['glow'].model.hidden_channels}).", ""]
    return "\n".join(lines)
