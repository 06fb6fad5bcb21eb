"""``mixerflow evaluate``: bits/dim of a checkpoint over a whole split."""

import argparse

from mixerflow.cli import common
from mixerflow.core.errors import UserError
from mixerflow.data.images import require_labels
from mixerflow.training.checkpoint import load_checkpoint
from mixerflow.training.evaluate import evaluate_bpd


def add_parser(commands) -> None:
    parser = commands.add_parser("evaluate", help="bits/dim of a checkpoint on a split")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1, metavar="K",
                        help="draws of the dequantization noise per image: K > 1 reports the "
                             "importance-weighted bound log mean_k p(x+u_k)/q(u_k|x), "
                             "tighter than one draw's (default: 1)")
    common.add_data_root(parser)
    common.add_device(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    common.at_least(args, 1, "batch_size", "samples")
    flow = load_checkpoint(args.checkpoint, args.device)
    if args.samples > 1 and flow.noise_std:
        raise UserError("--samples tightens a bound on the discrete likelihood; this model "
                        "gives densities of noisy images (model.dequantization: gaussian)")
    images = getattr(common.splits_of(flow.config.data, args, flow), args.split)
    if flow.num_classes:
        require_labels(images.labels, flow.num_classes, f"the {args.split} split")
    bpd, se = evaluate_bpd(flow, images, args.batch_size, samples=args.samples)
    bound = f" (importance-weighted, {args.samples} draws each)" if args.samples > 1 else ""
    meaning = f" {flow.bpd_meaning()}" if flow.bpd_meaning() else ""
    print(f"{args.split} bits/dim {bpd:.4f} ± {se:.4f}{bound} over {len(images)} images"
          f"{meaning}")
