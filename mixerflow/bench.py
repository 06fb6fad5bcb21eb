"""Speed and memory benchmarks: time per training image and peak memory of a model's
training step, at one or several image sizes, with the fitted scaling exponent.

Every measurement runs in a fresh process, so peak memory belongs to that model and
size alone. CPU figures are only comparable within one run: run a benchmark alone.
"""

import dataclasses
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from mixerflow.checkpoint import atomic_write
from mixerflow.config import ModelConfig
from mixerflow.errors import UserError
from mixerflow.models.flow import build_model, count_parameters
from mixerflow.training import autocast_for, current_rss_mb, peak_memory_mb, resolve_device


def measure_training(
    model: dict,
    image_shape: tuple[int, int, int],
    batch_size: int,
    steps: int,
    device_name: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
) -> dict:
    """Seconds per training image and peak step memory of the model ``model`` describes
    (a ``ModelConfig`` as a dict) on random 8-bit images ``(batch_size, *image_shape)``.

    Peak memory is the allocated CUDA memory on a GPU; on the CPU, the rise of the peak
    RSS above the RSS after building the model (activations, gradients, Adam state).
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = resolve_device(device_name)
    flow = build_model(ModelConfig(**model), image_shape, 256).to(device)
    images = torch.randint(0, 256, (batch_size, *image_shape), dtype=torch.uint8, device=device)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-4)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = current_rss_mb()
    flow.train()
    with torch.no_grad():
        flow.bpd(images)  # ActNorm data-dependent initialisation

    def step() -> None:
        with autocast_for(device, precision):
            loss = flow.bpd(images).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up: first-call allocations and kernel selection
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / (steps * batch_size)
    peak = peak_memory_mb(device)
    return {
        "model": model["kind"],
        "image_shape": list(image_shape),
        "pixels": image_shape[1] * image_shape[2],
        "num_params": count_parameters(flow),
        "ms_per_image": 1000 * seconds,
        "images_per_s": 1 / seconds,
        "peak_memory_mb": peak if device.type == "cuda" else peak - rss_before,
        "device": str(device),
    }


def measure_in_fresh_process(**kwargs) -> dict:
    """:func:`measure_training` in a spawned process (its own peak memory, its own threads)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(measure_training, kwds=kwargs)


def fitted_exponent(pixels: list[int], values: list[float]) -> float:
    """Slope of log(value) against log(pixels): value grows like pixels**slope."""
    if len(pixels) < 2:
        return float("nan")
    return float(np.polyfit(np.log(pixels), np.log(values), 1)[0])


def run_benchmark(
    models: dict[str, ModelConfig],
    shapes: list[tuple[int, int, int]],
    batch_size: int,
    steps: int,
    device: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
) -> dict:
    """Measure every model at every image shape ``(C, H, W)``; returns the report as a dict."""
    rows = []
    for shape in shapes:
        size = f"{shape[0]}x{shape[1]}x{shape[2]}"
        for name, model in models.items():
            print(f"bench: {name} at {size}, batch {batch_size} ...", flush=True)
            try:
                row = measure_in_fresh_process(
                    model=dataclasses.asdict(model), image_shape=tuple(shape),
                    batch_size=batch_size, steps=steps, device_name=device,
                    precision=precision, threads=threads,
                )
            except UserError as err:
                raise UserError(f"bench {name} at {size}: {err}") from None
            rows.append({"name": name, **row})
            print(f"bench: {name} {size}: {row['ms_per_image']:.2f} ms/image, "
                  f"{row['peak_memory_mb']:.0f} MB", flush=True)
    exponents = {}
    for name in models:
        mine = [row for row in rows if row["name"] == name]
        pixels = [row["pixels"] for row in mine]
        exponents[name] = {
            "time": fitted_exponent(pixels, [row["ms_per_image"] for row in mine]),
            "memory": fitted_exponent(pixels, [max(row["peak_memory_mb"], 1e-3) for row in mine]),
        }
    return {
        "shapes": [list(shape) for shape in shapes], "batch_size": batch_size, "steps": steps,
        "device": rows[0]["device"], "threads": threads or torch.get_num_threads(),
        "rows": rows, "exponents": exponents,
    }


def benchmark_markdown(report: dict, command: str) -> str:
    lines = [
        "# Benchmark: time per training image and peak memory",
        "",
        f"Command: `{command}`",
        "",
        f"Device {report['device']}, {report['threads']} threads, batch {report['batch_size']}, "
        f"{report['steps']} timed steps after one warm-up, random 8-bit images. Peak memory: "
        "allocated CUDA memory on a GPU; on a CPU, the rise of the "
        "peak RSS during training above the process's RSS after building the model.",
        "",
        "| model | image | parameters | ms / image | images / s | peak memory (MB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        _, height, width = row["image_shape"]
        lines.append(
            f"| {row['name']} | {height}x{width} | {row['num_params']:,} | "
            f"{row['ms_per_image']:.2f} | {row['images_per_s']:.1f} | "
            f"{row['peak_memory_mb']:.0f} |"
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
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def write_benchmark(report: dict, out_dir: Path, command: str) -> None:
    """``report.json``, ``report.md`` and, for several shapes, ``scaling.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {**report, "command": command}
    atomic_write(out_dir / "report.json",
                 lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    markdown = benchmark_markdown(report, command)
    atomic_write(out_dir / "report.md", lambda tmp: Path(tmp).write_text(markdown))
    if len(report["shapes"]) > 1:
        plot_scaling(report, out_dir / "scaling.png")
    print(markdown)

