"""Files written so that a failure never leaves half a file or loses the previous one."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mixerflow.core.errors import UserError


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
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-check-"):
            pass
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    return path
