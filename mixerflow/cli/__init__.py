"""The mixerflow command: train, evaluate, sample, embed, probe, compare, bench and more.

One module per command, its flags beside its handler.

User mistakes (:class:`~mixerflow.core.errors.UserError`) print one ``error: ...`` line and
exit with status 2.
"""

import argparse
import os
import shlex
import sys

from mixerflow.cli import (
    bench,
    campaign,
    classify,
    compare,
    embed,
    evaluate,
    prepare,
    probe,
    sample,
    train,
)
from mixerflow.core.device import resolve_device
from mixerflow.core.errors import LostPeer, UserError

COMMANDS = (train, evaluate, sample, classify, embed, probe, compare, campaign, prepare, bench)


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


def _no_flag_twice(parser: argparse.ArgumentParser, argv: list[str], command: str) -> None:
    """A flag given twice is an error: argparse would keep the last without a word. Flags
    meant to repeat (``--model``, ``--config``) may."""
    subparsers = next(action for action in parser._actions
                      if isinstance(action, argparse._SubParsersAction))
    actions = subparsers.choices[command]._option_string_actions
    seen: dict[argparse.Action, str] = {}
    for token in argv[argv.index(command) + 1:] if command in argv else []:
        name = token.split("=", 1)[0]
        matches = {actions[name]} if name in actions else {
            action for option, action in actions.items()
            if name.startswith("--") and option.startswith(name)}
        if len(matches) != 1:
            continue
        action = matches.pop()
        if action in seen and not isinstance(action, argparse._AppendAction):
            spelled = "" if seen[action] == name else f" (as {seen[action]} and {name})"
            _Parser.error(parser, f"{action.option_strings[-1]} is given twice{spelled}; "
                          "give it once")
        seen[action] = name


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if "=" not in item or item.startswith("-")]
    if unknown or (extra and not getattr(args, "takes_overrides", False)):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    _no_flag_twice(parser, argv if argv is not None else sys.argv[1:], args.command)
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
