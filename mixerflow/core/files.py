"""Files written so that a failure never leaves half a file or loses the previous one."""

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from mixerflow.core.errors import UserError

WRITE_CHECK_PREFIX = ".write-check-"  # writable()'s probe file


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(file)`` on a new file beside ``path``, then move it into place, so
    ``path`` is never half written. A failed write (a full disk …) is a :class:`UserError`
    and leaves any previous ``path`` as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:  # through Python's file: errors are OSErrors
                write(file)
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; a run folder is meant to be shared
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except (OSError, RuntimeError) as err:
        # torch.save reports a failed write as a RuntimeError raised while handling it
        cause = err if isinstance(err, OSError) else err.__context__
        if not isinstance(cause, OSError):
            raise
        kept = f"; the previous {path.name} is kept" if path.exists() else ""
        raise UserError(f"cannot write {path}: {cause.strerror or cause}{kept}") from None


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of this module's temporary files: an :func:`atomic_write` in
    progress (``.NAME.XXXX.tmp``, left behind only by a kill) or :func:`writable`'s probe."""
    return (name.startswith(".") and name.endswith(".tmp")) or name.startswith(WRITE_CHECK_PREFIX)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of UTF-8 ``text``."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def atomic_copy(source: Path, path: Path) -> None:
    """:func:`atomic_write` of ``source``'s bytes to ``path``."""
    atomic_write(path, lambda file: file.write(Path(source).read_bytes()))


def writable(path: Path) -> Path:
    """``path``, once its folder exists and takes a file: a failure to write shows before
    the work, not after it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=WRITE_CHECK_PREFIX):
            pass
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    return path


def output_path(text: str | Path, flag: str) -> Path:
    """The output path a user named in ``flag``, refused (before any work) when it cannot be
    what they meant: empty (an unset variable), or holding a ``~`` or ``$`` that no shell
    expanded."""
    text = str(text)
    if not text.strip():
        raise UserError(f"{flag} is empty (an unset variable?); name the path to write")
    if text.startswith("~") or "$" in text:
        raise UserError(f"{flag} {text!r} holds an unexpanded {'~' if text[0] == '~' else '$'}; "
                        "name the path itself")
    return Path(text)


def not_an_input(output: Path, inputs: dict[str, Path], flag: str) -> None:
    """Refuse ``output`` when it is one of a command's ``inputs`` (what -> path) or lies inside
    an input folder: writing it would replace what the command reads."""
    target = Path(output).resolve()
    for what, path in inputs.items():
        source = Path(path).resolve()
        if target == source or (source.is_dir() and source in target.parents):
            raise UserError(f"{flag} {output} would write over {what} {path}; choose another "
                            "path")


def claimable_folder(folder: Path, ours: Callable[[str], bool], flag: str) -> None:
    """Refuse ``folder`` as a command's own output folder when it is the working directory,
    or an existing folder holding anything ``ours(name)`` does not recognise (the user's
    files): a command writes only into a folder that is new, empty or its own."""
    folder = Path(folder)
    if folder.resolve() == Path.cwd().resolve():
        raise UserError(f"{flag} is the working directory; name a folder for the outputs")
    if not folder.is_dir():
        return
    foreign = sorted(entry.name for entry in folder.iterdir() if not ours(entry.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "")
        raise UserError(f"{flag} {folder} holds files that mixerflow did not write ({shown}); "
                        "name a new folder")


def distinct_files(paths: Iterable[str | Path], what: str) -> None:
    """Refuse two of ``paths`` that are one file (reached through a symbolic or hard link):
    its images would count twice, or a test image would be trained on."""
    seen: dict[tuple[int, int], str | Path] = {}
    for path in paths:
        info = os.stat(path)
        first = seen.setdefault((info.st_dev, info.st_ino), path)
        if first is not path:
            raise UserError(f"{first} and {path} are one file (through a link); {what} must "
                            "hold each image once")
