"""The ``mixerflow`` command: train, evaluate, sample, embed, probe, compare and bench.

User mistakes (:class:`UserError`) print one ``error: ...`` line and exit with status 2.
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mixerflow.checkpoint import load_checkpoint
from mixerflow.config import PRECISIONS, config_names, load_config, load_configs
from mixerflow.errors import LostPeer, UserError
from mixerflow.step import resolve_device

COMPARED = ("configs/quickstart.yaml", "configs/quickstart_glow.yaml")  # compare's default


def _overrides(args: argparse.Namespace) -> list[str]:
    """The command line's ``key=value`` overrides, with ``--data-root`` as one of them."""
    overrides = list(args.overrides)
    if getattr(args, "data_root", None):
        overrides.append(f"data.root={args.data_root}")
    return overrides


def _train(args: argparse.Namespace) -> None:
    from mixerflow.training import train

    train(load_config(args.config, _overrides(args)), resume=args.resume,
          show_progress=not args.no_progress)


def _compare(args: argparse.Namespace) -> None:
    from mixerflow import compare

    paths = args.model or list(COMPARED)
    if len(paths) < 2:
        raise UserError("compare needs at least two --model configs")
    named = dict(zip(config_names(paths), load_configs(paths, _overrides(args)), strict=True))
    out = _writable(Path(args.out) / "report.md").parent
    configs = compare.fair_configs(named, match_params=not args.no_match_params)
    configs = {name: compare.with_budget(cfg, args.minutes, args.steps)
               for name, cfg in configs.items()}
    seeds = _numbers(args.seeds, int, "--seeds")
    report = compare.compare(configs, seeds, out, show_progress=not args.no_progress)
    compare.write_report(report, out, args.command_line)


def _bench(args: argparse.Namespace) -> None:
    from mixerflow import bench
    from mixerflow.data import image_shape_of

    _at_least(args, 1, "batch_size", "timed_steps", "threads")
    out = _writable(Path(args.out) / "report.json").parent
    precisions = _choices(args.precision, PRECISIONS, "--precision")
    modes = _choices(args.modes, bench.MODES, "--modes")
    configs = load_configs(args.config, _overrides(args))
    if args.sizes:
        shapes = [(args.channels, size, size) for size in _sizes(args.sizes)]
    else:
        shapes = [image_shape_of(configs[0].data)]
    models = {name: cfg.model for name, cfg in zip(config_names(args.config), configs,
                                                    strict=True)}
    report = bench.run_benchmark(models, shapes, args.batch_size, args.timed_steps,
                                 args.device, precisions, args.threads, modes)
    bench.write_benchmark(report, out, args.command_line)


def _campaign(args: argparse.Namespace) -> None:
    from mixerflow import campaign

    parts = _choices(args.parts, campaign.PARTS, "--parts")
    if args.minutes is not None and args.minutes <= 0:
        raise UserError(f"--minutes must be positive, got {args.minutes}")
    out = Path(args.out or ("reports/campaign_smoke" if args.smoke else "docs/gpu_campaign"))
    campaign.run_campaign(out, args.data_root, args.smoke, parts, args.minutes,
                          args.overrides, args.command_line)
    print(f"campaign report: {out / 'report.md'}")


def _prepare(args: argparse.Namespace) -> None:
    from mixerflow import store
    from mixerflow.data import STORE_NAMES, data_root

    _at_least(args, 2, "image_size")
    show = not args.no_progress
    if args.verify:
        store.verify_store(Path(args.verify), show_progress=show)
        print(f"{args.verify}: every file matches its sha256")
        return
    if not args.source:
        raise UserError("prepare needs a SOURCE (imagenet32, imagenet64, cifar10, folder:DIR "
                        "…) or --verify STORE")
    if args.source in STORE_NAMES:
        if not args.src:
            raise UserError(f"prepare {args.source} needs --src, the folder of "
                            "train_data_batch_*.npz and val_data.npz")
        side = int(args.source[len("imagenet"):])
        splits, num_levels = store.imagenet_batches(Path(args.src), side), 256
        out = Path(args.out or data_root(args.data_root) / args.source)
    else:
        if not args.out:
            raise UserError(f"prepare {args.source} needs --out, the store folder to write")
        out = Path(args.out)
        splits, num_levels = _source_splits(args)
    meta = store.write_store(out, args.source, splits, num_levels, show_progress=show)
    for name, info in meta["splits"].items():
        print(f"{name}: {info['count']} images {tuple(info['shape'])}, sha256 "
              f"{info['sha256'][f'{name}_images.npy'][:16]}…")
    use = f"data.name={args.source} --data-root {out.parent}" if args.source in STORE_NAMES \
        and out.name == args.source else f"data.name=store:{out}"
    print(f"store written to {out}; train with {use}")


def _source_splits(args: argparse.Namespace) -> tuple[dict, int]:
    """A source the loader reads (folder:DIR streamed; others loaded) as store chunks, and
    its number of levels."""
    from mixerflow import store
    from mixerflow.config import DataConfig, validate_data_name
    from mixerflow.data import load_train_test

    validate_data_name(args.source)
    if args.source.startswith("folder:"):
        return store.folder_images(Path(args.source[7:]), args.image_size), 256
    train, test, num_levels = load_train_test(DataConfig(name=args.source, root=args.data_root))
    return store.loaded_sets(train, test), num_levels


def _at_least(args: argparse.Namespace, minimum: int, *flags: str) -> None:
    """Each of ``flags`` (argument names) that is set must be at least ``minimum``."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < minimum:
            name = "--" + flag.replace("_", "-")
            raise UserError(f"{name} must be at least {minimum}, got {value}")


def _writable(path: Path) -> Path:
    """``path``, once its folder exists and takes a file: a failure to write shows before
    the work, not after it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-check-"):
            pass
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    return path


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """A comma list of ``allowed`` words, e.g. ``fp32,bf16``."""
    chosen = tuple(word.strip() for word in text.split(","))
    unknown = [word for word in chosen if word not in allowed]
    if unknown or not chosen:
        raise UserError(f"{flag} takes a comma list of {', '.join(allowed)}; got {text!r}")
    return chosen


def _sizes(text: str) -> list[int]:
    sizes = _numbers(text, int, "--sizes")
    if min(sizes) < 2:
        raise UserError(f"--sizes must list image sides of at least 2, got {text!r}")
    return sizes


def _splits_of(data_cfg, args: argparse.Namespace):
    """The splits of ``data_cfg`` (a run's or an embeddings file's); ``--data-root`` moves them."""
    from mixerflow.data import load_splits

    if args.data_root:
        data_cfg.root = args.data_root
    return load_splits(data_cfg)


def _evaluate(args: argparse.Namespace) -> None:
    from mixerflow.training import evaluate_bpd

    _at_least(args, 1, "batch_size")
    flow = load_checkpoint(args.checkpoint, args.device)
    images = getattr(_splits_of(flow.config.data, args), args.split)
    bpd, se = evaluate_bpd(flow, images, args.batch_size)
    print(f"{args.split} bits/dim {bpd:.4f} ± {se:.4f} over {len(images)} images")


def _sample(args: argparse.Namespace) -> None:
    from mixerflow import sampling

    _at_least(args, 1, "n", "batch_size", "reconstruct", "interpolate")
    _at_least(args, 2, "interpolation_steps")
    temperatures = _numbers(args.temperature, float, "--temperature")
    if min(temperatures) < 0:
        raise UserError(f"--temperature must be at least 0, got {args.temperature}")
    flow = load_checkpoint(args.checkpoint, args.device)
    out = _writable(Path(args.out or Path(args.checkpoint).with_name("samples.png")))
    if args.reconstruct or args.interpolate:
        test = _splits_of(flow.config.data, args).test
        needed = max(args.reconstruct or 0, 2 * (args.interpolate or 0))
        if needed > len(test):
            raise UserError(f"asked for {needed} test images but the test split has {len(test)}")
    for temperature in temperatures:
        path = out if len(temperatures) == 1 else out.with_name(f"{out.stem}_t{temperature:g}.png")
        start = time.perf_counter()
        images = sampling.draw_samples(flow, args.n, temperature, args.batch_size, args.seed)
        seconds = time.perf_counter() - start
        sampling.save_grid(images, flow.num_levels, path)
        if args.npy:
            np.save(path.with_suffix(".npy"), images.numpy())
        shown = "" if args.n <= sampling.GRID_LIMIT else f" (the grid shows the first " \
            f"{sampling.GRID_LIMIT}{'' if args.npy else '; --npy saves all'})"
        print(f"{args.n} samples at temperature {temperature:g} -> {path}{shown} "
              f"({args.n / seconds:.0f} samples/s)")
    if args.reconstruct:
        path = out.with_name(f"{out.stem}_reconstruct.png")
        error = sampling.save_reconstructions(flow, test.images[: args.reconstruct],
                                              args.batch_size, path)
        print(f"reconstruction of {args.reconstruct} test images: max pixel error {error} "
              f"-> {path}")
    if args.interpolate:
        path = out.with_name(f"{out.stem}_interpolate.png")
        sampling.save_interpolations(flow, test.images, args.interpolate,
                                     args.interpolation_steps, path)
        print(f"{args.interpolate} latent interpolations between test images -> {path}")


def _embed(args: argparse.Namespace) -> None:
    from mixerflow import embedding

    _at_least(args, 1, "batch_size", "max_train")
    flow = load_checkpoint(args.checkpoint, args.device)
    out = _writable(Path(args.out or Path(args.checkpoint).with_name("embeddings.npz")))
    splits = _splits_of(flow.config.data, args)
    flow.embed(splits.test.images[:1].to(args.device), args.layer, args.pool)  # names first
    arrays = embedding.embed_splits(flow, splits, args.layer, args.pool, args.batch_size,
                                    args.max_train, show_progress=not args.no_progress)
    settings = {"checkpoint": str(args.checkpoint), "model": flow.config.model.kind,
                "layer": args.layer, "pool": args.pool, "data": vars(flow.config.data)}
    embedding.write_embeddings(out, arrays, settings)
    print(f"embeddings {args.layer}/{args.pool}: {arrays['train_x'].shape[1]} features; "
          f"{len(arrays['train_x'])} train, {len(arrays['val_x'])} val, "
          f"{len(arrays['test_x'])} test images -> {out}")


def _probe(args: argparse.Namespace) -> None:
    from mixerflow import embedding
    from mixerflow.config import config_from_dict

    _at_least(args, 1, "max_iter")
    if args.json:
        _writable(Path(args.json))
    arrays, settings = embedding.read_embeddings(Path(args.embeddings))
    name = f"{settings.get('model', '?')} {settings.get('layer', '?')}/{settings.get('pool', '?')}"
    pixels = None
    if args.baseline == "pixels":  # the data first: a failure shows before the probe's work
        if not isinstance(settings.get("data"), dict):
            raise UserError(f"{args.embeddings} does not say which data it embeds; "
                            "--baseline pixels needs a file written by mixerflow embed")
        try:
            data_cfg = config_from_dict({"data": settings["data"]}).data
        except UserError as err:
            raise UserError(f"{args.embeddings} names data that does not load: {err}") from None
        pixels = embedding.pixel_features(_splits_of(data_cfg, args), len(arrays["train_y"]))
    results = {name: embedding.probe(arrays, max_iter=args.max_iter)}
    if pixels is not None:
        results["raw pixels"] = embedding.probe(pixels, max_iter=args.max_iter)
    for label, result in results.items():
        print(f"{label}: test accuracy {result['test_accuracy']:.4f} (train "
              f"{result['train_accuracy']:.4f}, val {result['val_accuracy']:.4f}, "
              f"C {result['C']:g}, {result['features']} features, {result['train_size']} "
              f"train images; chance {result['chance']:.4f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": settings, **results}, indent=2))


def _numbers(text: str, kind: type, option: str) -> list:
    """``"0.5,0.7"`` -> ``[0.5, 0.7]``: distinct values of ``kind``, else a UserError."""
    noun = "integers" if kind is int else "numbers"
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{option} must be comma-separated {noun}, got {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise UserError(f"{option} must list distinct {noun}, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mixerflow", description=__doc__.splitlines()[0])
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

    sample = commands.add_parser("sample", help="sample grids, reconstructions, interpolations")
    sample.add_argument("--checkpoint", required=True)
    sample.add_argument("--n", type=int, default=64, help="samples per temperature")
    sample.add_argument("--temperature", default="0.7", help="one or several, e.g. 0.5,0.7,1")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--batch-size", type=int, default=256)
    sample.add_argument("--device", default="cpu")
    sample.add_argument("--out", help="PNG path (default: samples.png beside the checkpoint); "
                        "several temperatures add _t<T> to its name")
    sample.add_argument("--npy", action="store_true", help="also save the uint8 images (.npy)")
    sample.add_argument("--reconstruct", type=int, metavar="N",
                        help="encode and decode N test images; report the max pixel error")
    sample.add_argument("--interpolate", type=int, metavar="ROWS",
                        help="ROWS latent slerps between pairs of test images")
    sample.add_argument("--interpolation-steps", type=int, default=10)
    sample.add_argument("--data-root", help="override the data root the run was trained with")
    sample.set_defaults(run=_sample)

    embed = commands.add_parser("embed", help="embeddings of every split -> embeddings.npz")
    embed.add_argument("--checkpoint", required=True)
    embed.add_argument("--layer", default="z",
                       help="z, block:k (MixerFlow, TarFlow) or level:l (Glow)")
    embed.add_argument("--pool", default="none",
                       help="none | mean_patches | mean_channels (MixerFlow, TarFlow), "
                       "none | per_level (Glow)")
    embed.add_argument("--batch-size", type=int, default=500)
    embed.add_argument("--max-train", type=int, help="embed only the first N train images")
    embed.add_argument("--device", default="cpu")
    embed.add_argument("--data-root", help="override the data root the run was trained with")
    embed.add_argument("--out", help="npz path (default: embeddings.npz beside the checkpoint)")
    embed.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    embed.set_defaults(run=_embed)

    probe = commands.add_parser("probe", help="logistic-regression probe on embeddings.npz")
    probe.add_argument("--embeddings", required=True)
    probe.add_argument("--baseline", choices=("pixels",),
                       help="also probe the raw pixels of the same images")
    probe.add_argument("--max-iter", type=int, default=300, help="lbfgs iterations per fit")
    probe.add_argument("--data-root", help="data root for --baseline pixels")
    probe.add_argument("--json", help="also write the results to this JSON file")
    probe.set_defaults(run=_probe)

    compare = commands.add_parser(
        "compare", help="train several models on the same data and budget; write a report",
        description="Data, training and logging settings come from the first --model config; "
        "each config gives its model section, its width matched to the first's parameters.",
    )
    compare.add_argument("--model", action="append", metavar="CONFIG",
                         help=f"a model's YAML config; repeat for each model (default: "
                         f"{' and '.join(COMPARED)}); the report names it by the file's stem")
    compare.add_argument("--minutes", type=float, help="training budget per model (wall clock)")
    compare.add_argument("--steps", type=int, help="training budget per model (steps)")
    compare.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    compare.add_argument("--no-match-params", action="store_true",
                         help="keep every model's widths as written")
    compare.add_argument("--data-root", help="folder with local data (else $MIXERFLOW_DATA)")
    compare.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    compare.add_argument("--out", default="reports/compare", help="report folder")
    compare.epilog = ("Any further key.sub=value arguments override every config (a model key "
                      "the config of the kind that has it).")
    compare.set_defaults(run=_compare)

    campaign = commands.add_parser(
        "campaign", help="GPU campaign: bench (eager/compiled x fp32/bf16) and compare on CIFAR-10",
        description="Bench MixerFlow and a parameter-matched Glow on the CIFAR-10 configs "
        "(eager and compiled, fp32 and bf16), then train both for --minutes each; writes a "
        "report folder. Each part resumes where a previous run stopped.",
    )
    campaign.add_argument("--data-root", help="folder with cifar10/{train,test}.npz")
    campaign.add_argument("--out", help="report folder (default docs/gpu_campaign; "
                          "reports/campaign_smoke with --smoke)")
    campaign.add_argument("--parts", default="bench,compare", help="bench, compare or both")
    campaign.add_argument("--minutes", type=float, help="training budget per model (default 3)")
    campaign.add_argument("--smoke", action="store_true",
                          help="the same path on the CPU with a tiny model on the digits")
    campaign.epilog = "Any further key.sub=value arguments override both configs."
    campaign.set_defaults(run=_campaign)

    prepare = commands.add_parser(
        "prepare", help="convert a data set once into a memory-mapped store (large data sets)",
        description="Write train/test images and labels as .npy files that training maps "
        "instead of loading (data.name=store:DIR, or imagenet32 / imagenet64 under the data "
        "root), with sha256 checksums in meta.json.")
    prepare.add_argument("source", nargs="?", help="imagenet32 | imagenet64 (with --src), "
                         "cifar10, mnist, fashion_mnist, digits, npz:DIR or folder:DIR")
    prepare.add_argument("--src", help="imagenet32/64: folder of train_data_batch_*.npz and "
                         "val_data.npz")
    prepare.add_argument("--out", help="store folder (imagenet32/64: default DATA_ROOT/<name>)")
    prepare.add_argument("--data-root", help="data root (else $MIXERFLOW_DATA, else ./data)")
    prepare.add_argument("--image-size", type=int, help="folder:DIR only: resize to this size")
    prepare.add_argument("--verify", metavar="STORE", help="instead: check a store's checksums")
    prepare.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    prepare.set_defaults(run=_prepare)

    bench = commands.add_parser("bench", help="time and memory of training steps per config")
    bench.add_argument("--config", action="append", required=True,
                       help="a YAML config (repeat to compare several)")
    bench.add_argument("--data-root", help="folder with local data (for the default image shape)")
    bench.add_argument("--out", default="reports/bench", help="report folder")
    bench.add_argument("--sizes", help="square image sides, e.g. 16,32,64 (default: the data's "
                       "shape)")
    bench.add_argument("--channels", type=int, default=3, help="channels of the --sizes images")
    bench.add_argument("--batch-size", type=int, default=16)
    bench.add_argument("--timed-steps", type=int, default=5, help="timed steps per measurement")
    bench.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    bench.add_argument("--precision", default="auto",
                       help="auto | fp32 | bf16, or several: fp32,bf16")
    bench.add_argument("--modes", default="eager",
                       help="eager | compiled, or both: eager,compiled (regional torch.compile)")
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    bench.epilog = ("Any further key.sub=value arguments override every config (a model key "
                    "the configs of the kinds that have it). --sizes gives the scaling with "
                    "resolution: time and memory per image against pixels.")
    bench.set_defaults(run=_bench)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse with its mistakes in our one-line form (usage lives in ``--help``)."""

    def error(self, message: str) -> None:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if "=" not in item or item.startswith("-")]
    if unknown or (extra and args.command not in ("train", "compare", "bench", "campaign")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    args.overrides = extra
    args.command_line = "mixerflow " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        if getattr(args, "device", None):
            args.device = str(resolve_device(args.device, "--device"))
        args.run(args)
    except UserError as err:
        if os.environ.get("RANK", "0") == "0" or isinstance(err, LostPeer):  # torchrun: rank 0
            print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
