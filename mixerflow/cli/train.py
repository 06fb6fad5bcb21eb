"""``mixerflow train``: train a flow from a YAML config (``train.py`` runs this)."""

import argparse

from mixerflow.cli import common
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
    train(load_config(args.config, common.overrides(args)), resume=args.resume,
          show_progress=not args.no_progress)
