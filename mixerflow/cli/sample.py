"""``mixerflow sample``: sample grids at one or several temperatures, reconstructions and
latent interpolations of test images."""

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from mixerflow.cli import common
from mixerflow.core.device import MAX_SEED, require_memory
from mixerflow.core.errors import UserError
from mixerflow.core.files import atomic_write, not_an_input
from mixerflow.models.flow import ImageFlow
from mixerflow.tools import sampling
from mixerflow.training.checkpoint import load_checkpoint

INTERPOLATION_STEPS = 10
PER_CLASS = 10  # samples per class of a --class all grid


def add_parser(commands) -> None:
    parser = commands.add_parser("sample",
                                 help="sample grids, reconstructions, interpolations")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n", type=int, help="samples per temperature (default 64; with "
                        f"--class all: per class, default {PER_CLASS})")
    parser.add_argument("--temperature", default="0.7", help="one or several, e.g. 0.5,0.7,1")
    parser.add_argument("--class", dest="class_", metavar="K|all",
                        help="class-conditional models: samples of class K (0, 1, …), or "
                        "'all': one row per class")
    parser.add_argument("--guidance", type=float, metavar="W",
                        help="with --class: classifier-free guidance, the conditioners' "
                        "outputs pushed W times their gap from the no-class pass's (0: plain "
                        "conditional)")
    parser.add_argument("--denoise", action="store_true",
                        help="models trained on noisy images (model.dequantization: gaussian): "
                        "one score step of the model's own density removes the noise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", help="PNG path (default: samples.png beside the checkpoint); "
                        "several temperatures add _t<T> to its name")
    parser.add_argument("--npy", action="store_true", help="also save the uint8 images (.npy)")
    parser.add_argument("--reconstruct", type=int, metavar="N",
                        help="encode and decode N test images; report the max pixel error")
    parser.add_argument("--interpolate", type=int, metavar="ROWS",
                        help="ROWS latent slerps between pairs of test images")
    parser.add_argument("--interpolation-steps", type=int,
                        help=f"images per interpolation row (default {INTERPOLATION_STEPS})")
    common.add_data_root(parser)
    common.add_device(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.n is None:
        args.n = PER_CLASS if args.class_ == "all" else 64
    common.at_least(args, 1, "n", "batch_size", "reconstruct", "interpolate")
    common.at_least(args, 2, "interpolation_steps")
    temperatures = common.numbers(args.temperature, float, "--temperature")
    if min(temperatures) < 0:
        raise UserError(f"--temperature must be at least 0, got {args.temperature}")
    if args.interpolation_steps and not args.interpolate:
        raise UserError("--interpolation-steps has no effect without --interpolate")
    args.interpolation_steps = args.interpolation_steps or INTERPOLATION_STEPS
    if args.data_root and not (args.reconstruct or args.interpolate):
        raise UserError("--data-root has no effect here: sample reads test images only for "
                        "--reconstruct or --interpolate")
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed must lie in 0..{MAX_SEED}, got {args.seed}")
    if args.guidance is not None and args.class_ is None:
        raise UserError("--guidance has no effect without --class")
    if args.guidance is not None and not 0 <= args.guidance < math.inf:
        raise UserError(f"--guidance must be a finite number of at least 0, got {args.guidance}")
    flow = load_checkpoint(args.checkpoint, args.device)
    if args.denoise and not flow.noise_std:
        raise UserError(f"--denoise: {args.checkpoint} was trained on dequantized images, not "
                        "noisy ones (model.dequantization: gaussian); its samples hold no "
                        "noise to remove")
    labels = _labels(flow, args)
    _check_sizes_fit(flow, args)
    inputs = common.inputs_of(args.checkpoint, flow.config.data)
    out = common.output_file(args.out, Path(args.checkpoint).with_name("samples.png"), "--out",
                             inputs)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out} names the PNG grid; end its name in .png")
    grids = {t: out if len(temperatures) == 1 else out.with_name(f"{out.stem}_t{t:g}.png")
             for t in temperatures}
    extra = {part: out.with_name(f"{out.stem}_{part}.png") for part in ("reconstruct",
                                                                         "interpolate")}
    for path in [*grids.values(), *(p.with_suffix(".npy") for p in grids.values()),
                 *extra.values()]:
        not_an_input(path, inputs, "--out")
    test = None
    if args.reconstruct or args.interpolate:  # the test images first: a failure shows early
        test = common.splits_of(flow.config.data, args, flow).test
        needed = max(args.reconstruct or 0, 2 * (args.interpolate or 0))
        if needed > len(test):
            raise UserError(f"asked for {needed} test images but the test split has {len(test)}")
    for temperature, path in grids.items():
        _samples(flow, args, temperature, path, labels)
    if args.reconstruct:
        path = extra["reconstruct"]
        error = sampling.save_reconstructions(flow, test.images[: args.reconstruct],
                                              args.batch_size, path)
        print(f"reconstruction of {args.reconstruct} test images: max pixel error {error} "
              f"-> {path}")
    if args.interpolate:
        path = extra["interpolate"]
        sampling.save_interpolations(flow, test.images, args.interpolate,
                                     args.interpolation_steps, path)
        print(f"{args.interpolate} latent interpolations between test images -> {path}")


def _check_sizes_fit(flow: ImageFlow, args: argparse.Namespace) -> None:
    """The samples (uint8, all kept), a batch and an interpolation grid (float32 latents) must
    each fit the free memory."""
    values = math.prod(flow.image_shape)
    cpu, device = torch.device("cpu"), torch.device(args.device)
    require_memory(args.n * values, cpu, f"--n {args.n} samples", "lower --n")
    batch = min(args.batch_size, max(args.n, args.reconstruct or 0))  # batches are no larger
    require_memory(batch * values * 4, device, f"--batch-size {args.batch_size}",
                   "lower --batch-size")
    steps = (args.interpolate or 0) * args.interpolation_steps
    require_memory(steps * values * 4, device, f"{args.interpolate} x "
                   f"{args.interpolation_steps} interpolation steps", "lower --interpolation-steps")


def _labels(flow: ImageFlow, args: argparse.Namespace) -> torch.Tensor | None:
    """The class of every sample ``--class`` asks for (``all``: ``--n`` of each class in
    turn, so ``args.n`` becomes the total), or None."""
    if args.class_ is None:
        return None
    if not flow.num_classes:
        raise UserError(f"--class: {args.checkpoint} holds an unconditional model (trained "
                        "without model.class_conditional)")
    if args.class_ == "all":
        per_class, args.n = args.n, args.n * flow.num_classes
        return torch.arange(flow.num_classes).repeat_interleave(per_class)
    if not args.class_.isdigit() or int(args.class_) >= flow.num_classes:
        raise UserError(f"--class must be 'all' or a class from 0 to {flow.num_classes - 1}, "
                        f"got {args.class_!r}")
    return torch.full((args.n,), int(args.class_))


def _samples(flow: ImageFlow, args: argparse.Namespace, temperature: float, path: Path,
             labels: torch.Tensor | None) -> None:
    """``args.n`` samples at ``temperature`` (of the classes ``labels``): a grid at ``path``,
    one row per class for ``--class all`` (and the array, ``--npy``)."""
    start = time.perf_counter()
    images = sampling.draw_samples(flow, args.n, temperature, args.batch_size, args.seed,
                                   labels, args.guidance, args.denoise)
    seconds = time.perf_counter() - start
    per_row = args.n // flow.num_classes if args.class_ == "all" else None
    sampling.save_grid(images, flow.num_levels, path, nrow=per_row)
    if args.npy:
        atomic_write(path.with_suffix(".npy"), lambda file: np.save(file, images.numpy()))
    shown = "" if args.n <= sampling.GRID_LIMIT else f" (the grid shows the first " \
        f"{sampling.GRID_LIMIT}{'' if args.npy else '; --npy saves all'})"
    which = "" if args.class_ is None else (
        f" of {'every class' if args.class_ == 'all' else 'class ' + args.class_}"
        f"{'' if args.guidance is None else f', guidance {args.guidance:g}'}")
    which += ", denoised" if args.denoise else ""
    print(f"{args.n} samples{which} at temperature {temperature:g} -> {path}{shown} "
          f"({args.n / seconds:.0f} samples/s)")
