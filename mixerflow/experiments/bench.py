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
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mixerflow.core.device import (
    current_rss_mb,
    device_label,
    peak_memory_mb,
    resolve_device,
    synchronize,
)
from mixerflow.core.errors import UserError
from mixerflow.core.files import atomic_write, atomic_write_text
from mixerflow.data.images import ImageSet
from mixerflow.data.sampler import BatchSampler
from mixerflow.models.flow import build_model, count_parameters
from mixerflow.models.kind import ModelConfig
from mixerflow.nn.precision import uses_bf16
from mixerflow.training.step import (
    OBJECTIVE_RANGE,
    TrainStep,
    compile_regions,
    initialize_actnorm,
    make_optimizer,
)


def measure_training(
    model: dict,
    image_shape: tuple[int, int, int],
    batch_size: int,
    steps: int,
    device_name: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    compile: bool = False,
    compile_backend: str = "inductor",
) -> dict:
    """Speed, size and cost of the training step (:class:`~mixerflow.training.step.TrainStep`,
    the one training runs) of the model ``model`` describes (a ``ModelConfig`` as a dict), on
    batches of random 8-bit images ``(batch_size, *image_shape)`` kept on the device.

    Ops and FLOPs are counted on one step; with ``compile`` the first step's time is the
    compile time and the ops are those the compiled step still dispatches. Peak memory is
    the allocated CUDA memory on a GPU; on the CPU, the rise of the peak RSS above the RSS
    after building the model (activations, gradients, Adam state).
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = resolve_device(device_name)
    flow = build_model(ModelConfig.from_mapping(model), image_shape, 256).to(device)
    images = torch.randint(0, 256, (4 * batch_size, *image_shape), dtype=torch.uint8)
    batches = BatchSampler(images, batch_size, device, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = current_rss_mb()
    initialize_actnorm(flow, ImageSet(images, torch.zeros(len(images))), batch_size, device)
    step = TrainStep(flow, make_optimizer(flow, 1e-4, 0.0), device=device, precision=precision)
    index = iter(range(10**9))

    def one_step() -> torch.Tensor:
        return step(batches(), next(index), 1e-4)

    flops_per_image = count_flops(one_step) / batch_size
    ops = eager_ops = count_ops(one_step)
    if compile:
        compile_regions(flow, compile_backend)
    start = time.perf_counter()
    one_step()  # warm-up: first-call allocations, kernel selection, compilation
    synchronize(device)
    first_step_s = time.perf_counter() - start
    if compile:
        ops = count_ops(one_step, dispatched=False)
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / (steps * batch_size)
    if step.health()[0]:
        raise UserError(f"bench: {model['kind']} had a non-finite loss at {image_shape}; "
                        "its timing would not be a real step's")
    peak = peak_memory_mb(device)
    peak_flops = peak_flops_per_s(device, uses_bf16(device, precision))
    achieved = flops_per_image / seconds
    return {
        "model": model["kind"],
        "image_shape": list(image_shape),
        "pixels": image_shape[1] * image_shape[2],
        "num_params": count_parameters(flow),
        "mode": "compiled" if compile else "eager",
        "compile_backend": compile_backend if compile else None,
        "precision": "bf16" if uses_bf16(device, precision) else "fp32",
        "ms_per_image": 1000 * seconds,
        "images_per_s": 1 / seconds,
        "first_step_s": first_step_s,
        "aten_ops_per_step": ops["aten_events"],
        "kernel_ops_per_step": ops.get("dispatched"),
        "objective_aten_ops": ops["objective_aten_events"],
        "eager_objective_aten_ops": eager_ops["objective_aten_events"],
        "flops_per_image": flops_per_image,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_s": peak_flops,
        "mfu": achieved / peak_flops,
        "peak_memory_mb": peak if device.type == "cuda" else peak - rss_before,
        "device": device_label(device),
    }


def flops_text(flops_per_s: float) -> str:
    """``12.3 TFLOP/s`` or, below one, ``45.6 GFLOP/s``."""
    if flops_per_s >= 1e12:
        return f"{flops_per_s / 1e12:.1f} TFLOP/s"
    return f"{flops_per_s / 1e9:.1f} GFLOP/s"


# ops that only make a new view or an empty allocation: no kernel runs for them
_NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",
              "lift_fresh", "_local_scalar_dense"}


class _DispatchCounter(TorchDispatchMode):
    """Counts the aten ops dispatched below autograd (forward and backward) that run a kernel."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in _NO_KERNEL:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(step, dispatched: bool = True) -> dict:
    """Ops of one call of ``step`` (a training step).

    ``aten_events``: every ``aten::`` event torch.profiler records, nested calls and views
    included; ``objective_aten_events``: the same for the forward and backward of the
    objective alone (what the step spends before the optimizer); ``dispatched``: aten ops that
    run a kernel (no views or empty allocations) as a dispatch mode sees them, the same on
    every device, so a CPU count predicts the kernel launches of a GPU step.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    aten = [event for event in prof.events() if event.name.startswith("aten::")]
    objective = [event for event in aten if _inside(event, OBJECTIVE_RANGE)]
    counts = {"aten_events": len(aten), "objective_aten_events": len(objective)}
    if dispatched:
        with _DispatchCounter() as counter:
            step()
        counts["dispatched"] = counter.count
    return counts


def _inside(event, name: str) -> bool:
    while event is not None:
        if event.name == name:
            return True
        event = event.cpu_parent
    return False


def count_flops(step) -> float:
    """Floating-point operations of one call of ``step`` (matrix products and convolutions,
    forward and backward), as ``torch.utils.flop_counter`` counts them."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def matmul_flops_per_s(device: torch.device, bf16: bool, repeats: int = 3) -> float:
    """The device's measured dense peak: FLOP/s of a large square matrix product in the
    step's precision (bf16 or float32), best of ``repeats``. The side doubles from 256
    until one product takes 0.2 s (or reaches 8192 on a GPU, 2048 on a CPU), so the
    measurement is large enough to be a peak yet bounded in time where bf16 is slow."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    largest = 8192 if device.type == "cuda" else 2048
    size, best = 256, float("inf")
    while True:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        times = []
        for _ in range(repeats + 1):  # the first call is a warm-up
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            times.append(time.perf_counter() - start)
        best = min(times[1:])
        if best >= 0.2 or size >= largest:
            return 2 * size**3 / best
        size *= 2


def peak_flops_per_s(device: torch.device, bf16: bool) -> float:
    """MFU's denominator: the best measured matrix-product FLOP/s among the precisions the
    step computes in. A bf16 step keeps the flow arithmetic in float32, and on a CPU without
    bf16 arithmetic float32 products are the faster, so bf16's peak alone could be exceeded."""
    fp32 = matmul_flops_per_s(device, bf16=False)
    return max(fp32, matmul_flops_per_s(device, bf16=True)) if bf16 else fp32


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


MODES = ("eager", "compiled")


def run_benchmark(
    models: dict[str, ModelConfig],
    shapes: list[tuple[int, int, int]],
    batch_size: int,
    steps: int,
    device: str = "auto",
    precisions: tuple[str, ...] = ("auto",),
    threads: int | None = None,
    modes: tuple[str, ...] = ("eager",),
    cache: Path | None = None,
    compile_backend: str = "inductor",
) -> dict:
    """Measure every model at every image shape ``(C, H, W)``, in every mode (eager |
    compiled) and precision; returns the report as a dict. With ``cache`` (a JSON-lines
    file) finished measurements are appended there and reused by a rerun."""
    done = _cached_rows(cache)
    rows = []
    for shape in shapes:
        size = f"{shape[0]}x{shape[1]}x{shape[2]}"
        for name, model in models.items():
            for mode in modes:
                for precision in precisions:
                    what = f"{name} at {size}, {mode}, precision {precision}"
                    key = json.dumps([name, list(shape), mode, precision, batch_size])
                    if key in done:
                        print(f"bench: reusing {what} from {cache}", flush=True)
                        rows.append(done[key])
                        continue
                    print(f"bench: {what}, batch {batch_size} ...", flush=True)
                    try:
                        row = measure_in_fresh_process(
                            model=dataclasses.asdict(model), image_shape=tuple(shape),
                            batch_size=batch_size, steps=steps, device_name=device,
                            precision=precision, threads=threads, compile=mode == "compiled",
                            compile_backend=compile_backend,
                        )
                    except UserError as err:
                        raise UserError(f"bench {what}: {err}") from None
                    rows.append({"name": name, **row})
                    if cache is not None:
                        cache.parent.mkdir(parents=True, exist_ok=True)
                        with cache.open("a") as file:
                            file.write(json.dumps({"key": key, "row": rows[-1]}) + "\n")
                    print(f"bench: {what}: {row['ms_per_image']:.3f} ms/image, MFU "
                          f"{100 * row['mfu']:.1f} %, {row['peak_memory_mb']:.0f} MB",
                          flush=True)
    exponents = {}
    for name in models:
        mine = [row for row in rows if row["name"] == name
                and (row["mode"], row["precision"]) == (rows[0]["mode"], rows[0]["precision"])]
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


def _cached_rows(cache: Path | None) -> dict[str, dict]:
    if cache is None or not cache.exists():
        return {}
    records = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
    return {record["key"]: record["row"] for record in records}


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

