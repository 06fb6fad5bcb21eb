"""The ``mixerflow`` command: ``train``, ``evaluate``, ``sample``, ``compare`` and ``bench``.

User mistakes (:class:`UserError`) print one ``error: ...`` line and exit with status 2.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from mixerflow.checkpoint import load_checkpoint
from mixerflow.config import load_config
from mixerflow.errors import UserError
from mixerflow.sampling import save_grid


def _load(path: str | None, args: argparse.Namespace):
    """The config at ``path`` with the command line's ``key=value`` overrides and data root."""
    overrides = list(args.overrides)
    if getattr(args, "data_root", None):
        overrides.append(f"data.root={args.data_root}")
    return load_config(path, overrides)


def _train(args: argparse.Namespace) -> None:
    from mixerflow.training import train

    train(_load(args.config, args), resume=args.resume, show_progress=not args.no_progress)


def _compare(args: argparse.Namespace) -> None:
    from mixerflow import compare

    mixerflow_cfg, glow_cfg = _load(args.mixerflow, args), _load(args.glow, args)
    out = Path(args.out)
    if args.scaling:
        _benchmark({"mixerflow": mixerflow_cfg.model, "glow": glow_cfg.model},
                   [(args.channels, size, size) for size in _sizes(args.sizes)], args, out)
        return
    configs = compare.fair_configs(mixerflow_cfg, glow_cfg, match_params=not args.no_match_params)
    configs = {name: compare.with_budget(cfg, args.minutes, args.steps)
               for name, cfg in configs.items()}
    report = compare.compare(configs, _seeds(args.seeds), out, show_progress=not args.no_progress)
    compare.write_report(report, out, args.command_line)


def _bench(args: argparse.Namespace) -> None:
    from mixerflow.data import load_splits

    configs = {Path(path).stem: _load(path, args) for path in args.config}
    if args.sizes:
        shapes = [(args.channels, size, size) for size in _sizes(args.sizes)]
    else:
        shapes = [load_splits(next(iter(configs.values())).data).image_shape]
    _benchmark({name: cfg.model for name, cfg in configs.items()}, shapes, args, Path(args.out))


def _benchmark(models: dict, shapes: list, args: argparse.Namespace, out: Path) -> None:
    from mixerflow import bench

    report = bench.run_benchmark(models, shapes, args.batch_size, args.timed_steps,
                                 args.device, args.precision, args.threads)
    bench.write_benchmark(report, out, args.command_line)


def _sizes(text: str) -> list[int]:
    from mixerflow.bench import parse_sizes

    return parse_sizes(text)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must list distinct integers, got {text!r}")
    return seeds


def _evaluate(args: argparse.Namespace) -> None:
    from mixerflow.data import load_splits
    from mixerflow.training import evaluate_bpd

    flow = load_checkpoint(args.checkpoint, args.device)
    data_cfg = flow.config.data
    if args.data_root:
        data_cfg.root = args.data_root
    images = getattr(load_splits(data_cfg), args.split)
    bpd, se = evaluate_bpd(flow, images, args.batch_size)
    print(f"{args.split} bits/dim {bpd:.4f} ± {se:.4f} over {len(images)} images")


def _sample(args: argparse.Namespace) -> None:
    flow = load_checkpoint(args.checkpoint, args.device)
    out = Path(args.out or Path(args.checkpoint).with_name("samples.png"))
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    images = flow.sample(args.n, args.temperature, generator=generator)
    seconds = time.perf_counter() - start
    save_grid(images, flow.num_levels, out)
    print(f"{args.n} samples at temperature {args.temperature} -> {out} "
          f"({args.n / seconds:.0f} samples/s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixerflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a flow from a YAML config")
    train.add_argument("--config", help="YAML config (configs/*.yaml); defaults otherwise")
    train.add_argument("--resume", action="store_true", help="continue the run in log.out_dir")
    train.add_argument("--data-root", help="folder with local data (else $MIXERFLOW_DATA)")
    train.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    train.epilog = "Any further key.sub=value arguments override the config."
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="bits/dim of a checkpoint on a split")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test")
    evaluate.add_argument("--data-root", help="override the data root the run was trained with")
    evaluate.add_argument("--batch-size", type=int, default=500)
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(run=_evaluate)

    sample = commands.add_parser("sample", help="draw a sample grid from a checkpoint")
    sample.add_argument("--checkpoint", required=True)
    sample.add_argument("--n", type=int, default=64)
    sample.add_argument("--temperature", type=float, default=0.7)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="cpu")
    sample.add_argument("--out", help="PNG path (default: samples.png beside the checkpoint)")
    sample.set_defaults(run=_sample)

    compare = commands.add_parser(
        "compare", help="train MixerFlow and Glow on the same data and budget; write a report",
        description="Data, training and logging settings come from the MixerFlow config; the "
        "Glow config gives its model section, its width matched to MixerFlow's parameters.",
    )
    compare.add_argument("--mixerflow", default="configs/quickstart.yaml", help="MixerFlow config")
    compare.add_argument("--glow", default="configs/quickstart_glow.yaml", help="Glow config")
    compare.add_argument("--minutes", type=float, help="training budget per model (wall clock)")
    compare.add_argument("--steps", type=int, help="training budget per model (steps)")
    compare.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    compare.add_argument("--no-match-params", action="store_true",
                         help="keep the Glow config's hidden_channels as written")
    compare.add_argument("--data-root", help="folder with local data (else $MIXERFLOW_DATA)")
    compare.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    compare.add_argument("--out", default="reports/compare", help="report folder")
    compare.add_argument("--scaling", action="store_true",
                         help="instead: time and memory per training image against resolution")
    _add_bench_arguments(compare, sizes="16,32,64,128", batch_size=8)
    compare.epilog = "Any further key.sub=value arguments override both configs."
    compare.set_defaults(run=_compare)

    bench = commands.add_parser("bench", help="time and memory of training steps per config")
    bench.add_argument("--config", action="append", required=True,
                       help="a YAML config (repeat to compare several)")
    bench.add_argument("--data-root", help="folder with local data (for the default image shape)")
    bench.add_argument("--out", default="reports/bench", help="report folder")
    _add_bench_arguments(bench, sizes=None, batch_size=16)
    bench.epilog = "Any further key.sub=value arguments override every config."
    bench.set_defaults(run=_bench)
    return parser


def _add_bench_arguments(parser: argparse.ArgumentParser, sizes: str | None,
                         batch_size: int) -> None:
    parser.add_argument("--sizes", default=sizes,
                        help="square image sides, e.g. 16,32,64 (bench: default the data's)")
    parser.add_argument("--channels", type=int, default=3, help="channels of the --sizes images")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--timed-steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if "=" not in item or item.startswith("-")]
    if unknown or (extra and args.command not in ("train", "compare", "bench")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    args.overrides = extra
    args.command_line = "mixerflow " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        args.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
