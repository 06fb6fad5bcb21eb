"""``mixerflow train``: train a flow from a YAML config (``train.py`` runs this)."""

import argparse
from pathlib import Path

from mixerflow.cli import common
from mixerflow.core.errors import UserError
from mixerflow.training.config import load_config
from mixerflow.training.loop import train


def add_parser(commands) -> None:
    parser = commands.add_parser("train", help="train a flow from a YAML config",
                                 epilog="Any further key.sub=value arguments override the "
                                 "config.")
    parser.add_argument("--config", help="YAML config (configs/*.yaml); defaults otherwise")
    parser.add_argument("--resume", action="store_true", help="continue the run in log.out_dir")
    common.add_data_root(parser)
    common.add_no_progress(parser)
    parser.set_defaults(run=run, takes_overrides=True)


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, common.overrides(args))
    if args.config is not None and not any(o.startswith("log.out_dir=") for o in args.overrides):
        _not_another_runs_config(Path(args.config), cfg.log.out_dir)
    train(cfg, resume=args.resume, show_progress=not args.no_progress)


def _not_another_runs_config(config: Path, out_dir: str) -> None:
    """A run folder's own config.yaml whose log.out_dir names another folder (the folder was
    copied or moved) would train that other run: refused unless log.out_dir is given."""
    folder = config.resolve().parent
    if config.name != "config.yaml" or not (folder / "checkpoint.pt").is_file():
        return
    if Path(out_dir).resolve() != folder:
        raise UserError(f"{config} is the saved config of the run in {folder}, but its "
                        f"log.out_dir is {out_dir} (a copied or moved run?); pass "
                        f"log.out_dir={folder} to continue this one")
