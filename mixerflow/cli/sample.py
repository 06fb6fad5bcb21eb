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


def add_parser(commands) -> None:
    parser = commands.add_parser("sample",
                                 help="sample grids, reconstructions, interpolations")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n", type=int, default=64, help="samples per temperature")
    parser.add_argument("--temperature", default="0.7", help="one or several, e.g. 0.5,0.7,1")
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
    flow = load_checkpoint(args.checkpoint, args.device)
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
        _samples(flow, args, temperature, path)
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


def _samples(flow: ImageFlow, args: argparse.Namespace, temperature: float, path: Path) -> None:
    """``args.n`` samples at ``temperature``: a grid at ``path`` (and the array, ``--npy``)."""
    start = time.perf_counter()
    images = sampling.draw_samples(flow, args.n, temperature, args.batch_size, args.seed)
    seconds = time.perf_counter() - start
    sampling.save_grid(images, flow.num_levels, path)
    if args.npy:
        atomic_write(path.with_suffix(".npy"), lambda file: np.save(file, images.numpy()))
    shown = "" if args.n <= sampling.GRID_LIMIT else f" (the grid shows the first " \
        f"{sampling.GRID_LIMIT}{'' if args.npy else '; --npy saves all'})"
    print(f"{args.n} samples at temperature {temperature:g} -> {path}{shown} "
          f"({args.n / seconds:.0f} samples/s)")
