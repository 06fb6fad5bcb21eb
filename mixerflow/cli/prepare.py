"""``mixerflow prepare``: convert a data set once into a memory-mapped store."""

import argparse
from pathlib import Path

from mixerflow.cli import common
from mixerflow.core.errors import UserError
from mixerflow.core.files import not_an_input, output_path
from mixerflow.data import store
from mixerflow.data.sources import (
    SOURCES,
    DataConfig,
    data_folders,
    data_root,
    find_source,
    prepare_streams,
    source_names,
)


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "prepare", help="convert a data set once into a memory-mapped store (large data sets)",
        description="Write train/test images and labels as .npy files that training maps "
        "instead of loading (data.name=store:DIR, or imagenet32 / imagenet64 under the data "
        "root), with sha256 checksums in meta.json.")
    parser.add_argument("source", nargs="?", help=f"the data set: {source_names()}")
    parser.add_argument("--src", help="imagenet32/64: folder of train_data_batch_*.npz and "
                        "val_data.npz")
    parser.add_argument("--out", help="store folder (imagenet32/64: default DATA_ROOT/<name>)")
    parser.add_argument("--image-size", type=int, help="folder:DIR only: resize to this size")
    parser.add_argument("--verify", metavar="STORE", help="instead: check a store's checksums")
    common.add_data_root(parser)
    common.add_no_progress(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    common.at_least(args, 2, "image_size")
    show = not args.no_progress
    if args.verify:
        given = [name for name, value in (("SOURCE", args.source), ("--src", args.src),
                 ("--out", args.out), ("--image-size", args.image_size),
                 ("--data-root", args.data_root)) if value is not None]
        if given:
            raise UserError(f"--verify checks a store and writes nothing; {', '.join(given)} "
                            "would have no effect beside it")
        store.verify_store(Path(args.verify), show_progress=show)
        print(f"{args.verify}: every file matches its sha256")
        return
    if not args.source:
        raise UserError(f"prepare needs a SOURCE ({source_names()}) or --verify STORE")
    source, _ = find_source(args.source)
    if args.src and not source.prepared:
        raise UserError(f"--src is for the sources prepared from batch files "
                        f"({', '.join(n for n, s in SOURCES.items() if s.prepared)}); "
                        f"{args.source} is read from where it lies")
    if args.image_size and not source.resizes:
        raise UserError(f"--image-size resizes image folders only; {args.source} keeps its size")
    if args.data_root and source.prepared and args.out:
        raise UserError(f"--data-root has no effect with --out: prepare {args.source} reads "
                        "--src and writes --out")
    if args.data_root and not source.prepared:
        common.unused_root(args.source)
    if source.prepared:
        out = Path(args.out or data_root(args.data_root) / args.source)
    elif args.out is None:
        raise UserError(f"prepare {args.source} needs --out, the store folder to write")
    else:
        out = output_path(args.out, "--out")
    data_cfg = DataConfig(name=args.source, root=args.data_root, image_size=args.image_size)
    not_an_input(out, data_folders(data_cfg), "--out")
    splits, num_levels = prepare_streams(data_cfg, Path(args.src) if args.src else None)
    meta = store.write_store(out, args.source, splits, num_levels, show_progress=show)
    for name, info in meta["splits"].items():
        print(f"{name}: {info['count']} images {tuple(info['shape'])}, sha256 "
              f"{info['sha256'][f'{name}_images.npy'][:16]}…")
    named = source.prepared and out.name == args.source
    use = f"data.name={args.source} --data-root {out.parent}" if named \
        else f"data.name=store:{out}"
    print(f"store written to {out}; train with {use}")
