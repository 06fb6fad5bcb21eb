"""Two trained models' test bits/dim and their difference with its paired standard error.

    python scripts/paired_bpd.py --data-root ../shared/data CHECKPOINT_A CHECKPOINT_B

Both models are evaluated on every image of the test split with the same dequantization
noise (the fixed evaluation seed, in batches of the first run's ``train.eval_batch_size``,
so each figure is the one its training run reported); the per-image differences lose
the spread the images share, and the standard error of their mean is far below the two
figures' own standard errors combined. Prints one JSON line: each model's bits/dim ± s.e.,
and ``b - a`` ± its paired s.e. Both checkpoints must be of one data set. The paired s.e.
covers the test images and noise, not how a second training seed would differ.
"""

import argparse
import dataclasses
import json
import math
import sys

import torch

from mixerflow.cli.common import splits_of
from mixerflow.core.errors import UserError
from mixerflow.training.checkpoint import load_checkpoint
from mixerflow.training.evaluate import image_bpd


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean of a float64 ``(N,)`` tensor and its standard error."""
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs=2)
    parser.add_argument("--data-root")
    args = parser.parse_args()
    flows = [load_checkpoint(path) for path in args.checkpoints]
    data = [dataclasses.replace(flow.config.data, root=None) for flow in flows]  # moved: fine
    if data[0] != data[1]:
        raise UserError(f"{args.checkpoints[0]} and {args.checkpoints[1]} were trained on "
                        f"different data settings")
    test = splits_of(flows[0].config.data, args, flows[0]).test
    batch_size = flows[0].config.train.eval_batch_size  # the noise of a batch: its start
    values = [image_bpd(flow, test, batch_size) for flow in flows]
    report = {"images": len(test)}
    for name, path, bpd in zip("ab", args.checkpoints, values, strict=True):
        report[name] = {"checkpoint": path, "bpd": mean_and_se(bpd)}
    report["b_minus_a"] = mean_and_se(values[1] - values[0])
    print(json.dumps(report))


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
