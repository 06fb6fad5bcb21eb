"""The ``mixerflow`` command: ``train``, ``evaluate`` and ``sample``.

User mistakes (:class:`UserError`) print one ``error: ...`` line and exit with status 2.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from mixerflow.checkpoint import load_checkpoint
from mixerflow.config import load_config
from mixerflow.errors import UserError
from mixerflow.sampling import save_grid


def _train(args: argparse.Namespace) -> None:
    from mixerflow.training import train

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    cfg = load_config(args.config, overrides)
    train(cfg, resume=args.resume, show_progress=not args.no_progress)


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
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if "=" not in item or item.startswith("-")]
    if unknown or (extra and args.command != "train"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    args.overrides = extra
    try:
        args.run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
