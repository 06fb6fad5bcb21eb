"""The mixerflow command: train, evaluate, sample, embed, probe, compare, bench and more.

One module per command, its flags beside its handler.

User mistakes (:class:`~mixerflow.core.errors.UserError`) print one ``error: ...`` line and
exit with status 2.
"""

import argparse
import os
import shlex
import sys

from mixerflow.cli import bench, campaign, compare, embed, evaluate, prepare, probe, sample, train
from mixerflow.core.device import resolve_device
from mixerflow.core.errors import LostPeer, UserError

COMMANDS = (train, evaluate, sample, embed, probe, compare, campaign, prepare, bench)


class _Parser(argparse.ArgumentParser):
    """argparse with its mistakes in our one-line form (usage lives in ``--help``)."""

    def error(self, message: str) -> None:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mixerflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if "=" not in item or item.startswith("-")]
    if unknown or (extra and not getattr(args, "takes_overrides", False)):
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
