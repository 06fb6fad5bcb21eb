"""``mixerflow bench``: time, memory, ops and FLOPs of the training step per config."""

import argparse

from mixerflow.cli import common
from mixerflow.core.errors import UserError
from mixerflow.data.splits import image_shape_of
from mixerflow.experiments import bench, reports
from mixerflow.nn.precision import PRECISIONS
from mixerflow.training.config import config_names, load_configs


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "bench", help="time and memory of training steps per config",
        epilog=common.OVERRIDES_EPILOG + " --sizes gives the scaling with resolution: time "
        "and memory per image against pixels.")
    parser.add_argument("--config", action="append", required=True,
                        help="a YAML config (repeat to compare several)")
    parser.add_argument("--out", default="reports/bench", help="report folder")
    parser.add_argument("--sizes", help="square image sides, e.g. 16,32,64 (default: the "
                        "data's shape)")
    parser.add_argument("--channels", type=int, default=3, help="channels of the --sizes images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--timed-steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--precision", default="auto",
                        help="auto | fp32 | bf16, or several: fp32,bf16")
    parser.add_argument("--modes", default="eager",
                        help="eager | compiled, or both: eager,compiled (regional torch.compile)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    common.add_data_root(parser)
    common.add_device(parser, default="auto")
    parser.set_defaults(run=run, takes_overrides=True)


def run(args: argparse.Namespace) -> None:
    common.at_least(args, 1, "batch_size", "timed_steps", "threads")
    if args.data_root:
        raise UserError("--data-root has no effect here: bench times random images of the "
                        "data's shape and reads no data")
    out = common.report_folder(args.out, {"report.json", "report.md", "scaling.png"})
    precisions = common.choices(args.precision, PRECISIONS, "--precision")
    modes = common.choices(args.modes, bench.MODES, "--modes")
    configs = load_configs(args.config, common.overrides(args))
    if args.sizes:
        shapes = [(args.channels, size, size) for size in _sizes(args.sizes)]
    else:
        shapes = [image_shape_of(configs[0].data)]
    models = {name: cfg.model for name, cfg in zip(config_names(args.config), configs,
                                                    strict=True)}
    report = bench.run_benchmark(models, shapes, args.batch_size, args.timed_steps,
                                 args.device, precisions, args.threads, modes)
    reports.write_benchmark(report, out, args.command_line)


def _sizes(text: str) -> list[int]:
    sizes = common.numbers(text, int, "--sizes")
    if min(sizes) < 2:
        raise UserError(f"--sizes must list image sides of at least 2, got {text!r}")
    return sizes
