"""What several commands share: the flags they all spell alike, and the checks of their
values (one-line errors before any work)."""

import argparse
import dataclasses
import math
from pathlib import Path

from mixerflow.core.errors import UserError
from mixerflow.core.files import (
    claimable_folder,
    is_temporary,
    not_an_input,
    output_path,
    writable,
)
from mixerflow.data.images import Splits
from mixerflow.data.sources import DataConfig, data_folders, root_unused
from mixerflow.data.splits import load_splits
from mixerflow.models.flow import ImageFlow

OVERRIDES_EPILOG = ("Any further key.sub=value arguments override every config (a model key "
                    "the configs of the kinds that have it).")


def add_data_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", help="folder with local data (else $MIXERFLOW_DATA, "
                        "else ./data); for a trained run, where its data lies now")


def add_device(parser: argparse.ArgumentParser, default: str = "cpu") -> None:
    parser.add_argument("--device", default=default, help="auto | cpu | cuda | cuda:N")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def overrides(args: argparse.Namespace) -> list[str]:
    """The command line's ``key=value`` overrides, with ``--data-root`` as one of them; a key
    given twice is an error (the last would win without a word)."""
    extra = [f"data.root={args.data_root}"] if getattr(args, "data_root", None) else []
    given: dict[str, str] = {}
    for override in [*args.overrides, *extra]:
        key = override.partition("=")[0]
        if key in given:
            said = "--data-root and data.root" if key == "data.root" and extra else key
            raise UserError(f"{said} given twice ({given[key]!r} and "
                            f"{override.partition('=')[2]!r}); give it once")
        given[key] = override.partition("=")[2]
    return [*args.overrides, *extra]


def output_file(named: str | None, default: Path, flag: str,
                inputs: dict[str, Path]) -> Path:
    """The file a command writes: the path ``flag`` names (a usable path) or ``default``,
    checked before any work to be none of ``inputs`` (what -> path) and to be writable."""
    path = default if named is None else output_path(named, flag)
    not_an_input(path, inputs, flag)
    return writable(path)


def report_folder(named: str, ours: set[str], flag: str = "--out") -> Path:
    """A report folder: a usable path, new, empty or holding only ``ours`` (names a report
    writes; ``samples_*.png`` and temporaries too), never the working directory."""
    folder = output_path(named, flag)

    def written_by_us(name: str) -> bool:
        return name in ours or name.startswith("samples_") or is_temporary(name)

    claimable_folder(folder, written_by_us, flag)
    return writable(folder / "report.md").parent


def inputs_of(checkpoint: str, data_cfg: DataConfig) -> dict[str, Path]:
    """A trained run's inputs that its tools must not write over: the checkpoint and the
    user's data folder."""
    return {"the checkpoint": Path(checkpoint), **data_folders(data_cfg)}


def splits_of(data_cfg: DataConfig, args: argparse.Namespace,
              flow: ImageFlow | None = None) -> Splits:
    """The splits of a trained run's (or an embeddings file's) data; ``--data-root`` says
    where that data lies now. With ``flow`` (the run's model), images of another shape or
    number of levels than it was trained on are refused."""
    if args.data_root:
        unused_root(data_cfg.name)
        data_cfg = dataclasses.replace(data_cfg, root=str(Path(args.data_root).absolute()))
    splits = load_splits(data_cfg)
    if flow is not None:
        flow.require_images(splits.image_shape, splits.num_levels, data_cfg.name)
    return splits


def unused_root(name: str) -> None:
    """``--data-root`` given for data set ``name`` that reads none is an error."""
    unused = root_unused(name)
    if unused:
        raise UserError(f"--data-root has no effect here: {unused}")


def at_least(args: argparse.Namespace, minimum: int, *flags: str) -> None:
    """Each of ``flags`` (argument names) that is set must be at least ``minimum``."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < minimum:
            name = "--" + flag.replace("_", "-")
            raise UserError(f"{name} must be at least {minimum}, got {value}")


def choices(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """A comma list of ``allowed`` words, e.g. ``fp32,bf16``."""
    chosen = tuple(word.strip() for word in text.split(","))
    unknown = [word for word in chosen if word not in allowed]
    if unknown or not chosen:
        raise UserError(f"{flag} takes a comma list of {', '.join(allowed)}; got {text!r}")
    return chosen


def numbers(text: str, kind: type, option: str) -> list:
    """``"0.5,0.7"`` -> ``[0.5, 0.7]``: distinct values of ``kind``, else a UserError."""
    noun = "integers" if kind is int else "numbers"
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{option} must be comma-separated {noun}, got {text!r}") from None
    if not values or len(set(values)) != len(values):
        raise UserError(f"{option} must list distinct {noun}, got {text!r}")
    if not all(map(math.isfinite, values)):
        raise UserError(f"{option} must list finite {noun}, got {text!r}")
    return values


def positive_minutes(minutes: float | None) -> None:
    """``--minutes``, when given, is a positive finite number."""
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise UserError(f"--minutes must be positive and finite, got {minutes}")
