"""What keeps a run's work safe: stop requests that wait for a step boundary, and a lock
that gives a run folder to one training at a time.

SLURM and cloud schedulers send SIGTERM some seconds before they kill a job; Ctrl-C sends
SIGINT. :class:`StopSignals` turns either into a request that the training loop honours
after the current step (checkpoint, then exit), so a resumed run continues exactly. A
second Ctrl-C interrupts at once (the last checkpoint on disk is kept).
"""

import fcntl
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from mixerflow.core.errors import UserError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Within ``with StopSignals() as stops:``, ``stops.requested`` names the first stop
    signal received (``"SIGTERM"`` …) or is None; ``then(signum)``, if given, is called on
    every one. Outside the main thread it does nothing."""

    def __init__(self, then: Callable[[int], None] | None = None):
        self.requested: str | None = None
        self._then = then
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.requested == "SIGINT":
            raise KeyboardInterrupt  # Ctrl-C twice: the user does not want to wait
        self.requested = self.requested or signal.Signals(signum).name
        if self._then is not None:
            self._then(signum)


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock`` while a training writes into ``run_dir``.

    The kernel drops the lock when its process ends, however it ends, so a lock file left by
    a killed run is stale and is simply taken over, along with the temporary files of an
    atomic write that the kill interrupted. The file records who holds it, for the
    error a second training gets. (On network file systems ``flock`` is only as good as
    the server's lock support.)
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self._file = None
        self._created_folder = False

    def acquire(self) -> None:
        try:
            self._created_folder = not self.run_dir.exists()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a+")
        except OSError as err:
            raise UserError(f"cannot use {self.run_dir} as the run folder "
                            f"(log.out_dir): {err.strerror}") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            self._file = None
            raise UserError(
                f"{self.run_dir} is in use by another training ({holder}); wait for it to end "
                "or set log.out_dir=... for a new run"
            ) from None
        try:  # unbuffered, so a full disk fails here and not again at close
            os.ftruncate(self._file.fileno(), 0)
            os.pwrite(self._file.fileno(), f"pid {os.getpid()} on {socket.gethostname()}\n"
                      .encode(), 0)
        except OSError as err:  # a full disk
            self.release()
            raise UserError(f"cannot use {self.run_dir} as the run folder (log.out_dir): "
                            f"{err.strerror}") from None
        for leftover in self.run_dir.glob(".*.tmp"):  # a killed writer's; nobody else writes
            leftover.unlink(missing_ok=True)

    def release(self) -> None:
        """Unlock; a folder this lock created and nothing else wrote to is removed again."""
        if self._file is None:
            return
        if self._created_folder and [p.name for p in self.run_dir.iterdir()] == [".lock"]:
            self.path.unlink()
            self.run_dir.rmdir()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
