"""``mixerflow classify``: a class-conditional checkpoint as a classifier of a split,
``p(y | x) ∝ p(x | y) p(y)``, with its bits/dim given the class and of the class mixture."""

import argparse
import dataclasses

import torch

from mixerflow.cli import common
from mixerflow.core.errors import UserError
from mixerflow.data.images import require_labels
from mixerflow.training.checkpoint import load_checkpoint
from mixerflow.training.evaluate import class_log_probs, classification, evaluate_bpd


def add_parser(commands) -> None:
    parser = commands.add_parser("classify", help="a class-conditional checkpoint as a "
                                 "classifier: accuracy and bits/dim per class")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--batch-size", type=int, default=500)
    common.add_data_root(parser)
    common.add_device(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    common.at_least(args, 1, "batch_size")
    flow = load_checkpoint(args.checkpoint, args.device)
    if not flow.num_classes:
        raise UserError(f"{args.checkpoint} holds an unconditional model (trained without "
                        "model.class_conditional); only a class-conditional one classifies")
    splits = common.splits_of(flow.config.data, args, flow)
    data = getattr(splits, args.split)
    for name, part in (("train", splits.train), (args.split, data)):
        require_labels(part.labels, flow.num_classes, f"{flow.config.data.name}'s {name} split")
    counts = torch.bincount(splits.train.labels, minlength=flow.num_classes).double()
    log_prior = torch.log(counts / counts.sum())  # the training labels' frequencies
    scores = class_log_probs(flow, data, args.batch_size)
    report = classification(scores, data.labels, log_prior, flow.num_dims)
    no_class = dataclasses.replace(data, labels=torch.full_like(data.labels, flow.num_classes))
    report["bpd_no_class"] = evaluate_bpd(flow, no_class, args.batch_size)
    print(format_report(report, args.split, len(data)))


def format_report(report: dict, split: str, count: int) -> str:
    """The report of :func:`classification` (and ``bpd_no_class``) as lines of text."""

    def figure(key: str) -> str:
        mean, se = report[key]
        return f"{mean:.4f} ± {se:.4f}"

    lines = [f"{split}: {count} images, accuracy {report['accuracy']:.4f} (p(y | x) with the "
             "training labels' frequencies as p(y))",
             f"bits/dim given the class {figure('bpd_given_class')}; of the class mixture "
             f"p(x) {figure('bpd_mixture')}; with the no-class token {figure('bpd_no_class')}",
             "class  images  accuracy  bits/dim given the class"]
    lines += [f"{label:>5}  {row['count']:>6}  {row['accuracy']:>8.4f}  "
              f"{row['bpd_given_class']:.4f}" for label, row in report["per_class"].items()]
    return "\n".join(lines)
