"""``mixerflow probe``: a logistic-regression probe on embeddings.npz, beside raw pixels."""

import argparse
import json
from pathlib import Path

from mixerflow.cli import common
from mixerflow.core.errors import UserError
from mixerflow.core.files import atomic_write_text
from mixerflow.tools import embedding
from mixerflow.tools.probe import probe
from mixerflow.training.config import config_from_dict


def add_parser(commands) -> None:
    parser = commands.add_parser("probe", help="logistic-regression probe on embeddings.npz")
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--baseline", choices=("pixels",),
                        help="also probe the raw pixels of the same images")
    parser.add_argument("--max-iter", type=int, default=300, help="lbfgs iterations per fit")
    parser.add_argument("--json", help="also write the results to this JSON file")
    common.add_data_root(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    common.at_least(args, 1, "max_iter")
    if args.data_root and not args.baseline:
        raise UserError("--data-root has no effect here: probe reads images only for "
                        "--baseline pixels")
    if args.json is not None:
        common.output_file(args.json, Path(args.json), "--json",
                           {"the embeddings": Path(args.embeddings)})
    arrays, settings = embedding.read_embeddings(Path(args.embeddings))
    name = f"{settings.get('model', '?')} {settings.get('layer', '?')}/{settings.get('pool', '?')}"
    pixels = _pixels(args, settings, len(arrays["train_y"])) if args.baseline else None
    results = {name: probe(arrays, max_iter=args.max_iter)}
    if pixels is not None:
        results["raw pixels"] = probe(pixels, max_iter=args.max_iter)
    for label, result in results.items():
        print(f"{label}: test accuracy {result['test_accuracy']:.4f} (train "
              f"{result['train_accuracy']:.4f}, val {result['val_accuracy']:.4f}, "
              f"C {result['C']:g}, {result['features']} features, {result['train_size']} "
              f"train images; chance {result['chance']:.4f})")
    if args.json is not None:
        atomic_write_text(Path(args.json), json.dumps({"settings": settings, **results},
                                                      indent=2))


def _pixels(args: argparse.Namespace, settings: dict, max_train: int) -> dict:
    """The raw pixels of the images the embeddings file embeds (read before the probe's
    work, so a failure shows first)."""
    if not isinstance(settings.get("data"), dict):
        raise UserError(f"{args.embeddings} does not say which data it embeds; "
                        "--baseline pixels needs a file written by mixerflow embed")
    try:
        data_cfg = config_from_dict({"data": settings["data"]}).data
    except UserError as err:
        raise UserError(f"{args.embeddings} names data that does not load: {err}") from None
    return embedding.pixel_features(common.splits_of(data_cfg, args), max_train)
