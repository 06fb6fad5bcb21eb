"""``mixerflow embed``: embeddings of every split of a checkpoint's data -> embeddings.npz."""

import argparse
from pathlib import Path

from mixerflow.cli import common
from mixerflow.models.kind import kinds_text
from mixerflow.tools import embedding
from mixerflow.training.checkpoint import load_checkpoint


def add_parser(commands) -> None:
    parser = commands.add_parser("embed", help="embeddings of every split -> embeddings.npz")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--layer", default="z",
                        help=kinds_text(lambda transform: transform.LAYERS))
    parser.add_argument("--pool", default="none",
                        help=kinds_text(lambda transform: " | ".join(transform.POOLS)))
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-train", type=int, help="embed only the first N train images")
    parser.add_argument("--out", help="npz path (default: embeddings.npz beside the checkpoint)")
    common.add_data_root(parser)
    common.add_device(parser)
    common.add_no_progress(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    common.at_least(args, 1, "batch_size", "max_train")
    flow = load_checkpoint(args.checkpoint, args.device)
    out = common.output_file(args.out, Path(args.checkpoint).with_name("embeddings.npz"),
                             "--out", common.inputs_of(args.checkpoint, flow.config.data))
    splits = common.splits_of(flow.config.data, args, flow)
    flow.embed(splits.test.images[:1].to(args.device), args.layer, args.pool)  # names first
    arrays = embedding.embed_splits(flow, splits, args.layer, args.pool, args.batch_size,
                                    args.max_train, show_progress=not args.no_progress)
    settings = {"checkpoint": str(args.checkpoint), "model": flow.config.model.kind,
                "layer": args.layer, "pool": args.pool, "data": vars(flow.config.data)}
    embedding.write_embeddings(out, arrays, settings)
    print(f"embeddings {args.layer}/{args.pool}: {arrays['train_x'].shape[1]} features; "
          f"{len(arrays['train_x'])} train, {len(arrays['val_x'])} val, "
          f"{len(arrays['test_x'])} test images -> {out}")
