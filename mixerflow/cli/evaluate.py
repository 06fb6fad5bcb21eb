"""``mixerflow evaluate``: bits/dim of a checkpoint over a whole split."""

import argparse

from mixerflow.cli import common
from mixerflow.training.checkpoint import load_checkpoint
from mixerflow.training.evaluate import evaluate_bpd


def add_parser(commands) -> None:
    parser = commands.add_parser("evaluate", help="bits/dim of a checkpoint on a split")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--batch-size", type=int, default=500)
    common.add_data_root(parser)
    common.add_device(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    common.at_least(args, 1, "batch_size")
    flow = load_checkpoint(args.checkpoint, args.device)
    images = getattr(common.splits_of(flow.config.data, args, flow), args.split)
    bpd, se = evaluate_bpd(flow, images, args.batch_size)
    print(f"{args.split} bits/dim {bpd:.4f} ± {se:.4f} over {len(images)} images")
