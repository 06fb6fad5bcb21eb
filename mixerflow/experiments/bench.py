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

from mixerflow.core.device import (
    current_rss_mb,
    device_label,
    peak_memory_mb,
    resolve_device,
    synchronize,
)
from mixerflow.core.errors import UserError
from mixerflow.data.images import ImageSet
from mixerflow.data.sampler import BatchSampler
from mixerflow.experiments.counting import count_flops, count_ops, peak_flops_per_s
from mixerflow.models.flow import ImageFlow, build_model, count_parameters
from mixerflow.models.kind import ModelConfig
from mixerflow.nn.precision import uses_bf16
from mixerflow.training.step import (
    TrainStep,
    compile_regions,
    initialize_actnorm,
    make_optimizer,
)

BENCH_CLASSES = 10  # the random labels of a class-conditional model's batches


def bench_model(model_cfg: ModelConfig, image_shape: tuple[int, int, int]) -> ImageFlow:
    """The flow a benchmark times: 8-bit images of ``image_shape``, ``BENCH_CLASSES`` classes
    where the model is class-conditional."""
    classes = BENCH_CLASSES if model_cfg.class_conditional else 0
    return build_model(model_cfg, image_shape, 256, num_classes=classes)


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
    after building the model (activations, gradients, Adam state). A class-conditional
    model trains on random labels of ``BENCH_CLASSES`` classes.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = resolve_device(device_name)
    model_cfg = ModelConfig.from_mapping(model)
    flow = bench_model(model_cfg, image_shape).to(device)
    images = torch.randint(0, 256, (4 * batch_size, *image_shape), dtype=torch.uint8)
    labels = torch.randint(0, max(flow.num_classes, 1), (len(images),))
    batches = BatchSampler(images, batch_size, device, seed=0,
                           labels=labels if flow.num_classes else None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = current_rss_mb()
    initialize_actnorm(flow, ImageSet(images, labels), batch_size, device)
    step = TrainStep(flow, make_optimizer(flow, 1e-4, 0.0), device=device, precision=precision,
                     label_drop=model_cfg.drop_rate)
    index = iter(range(10**9))

    def one_step() -> torch.Tensor:
        images, labels = batches()
        return step(images, next(index), 1e-4, labels)

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
