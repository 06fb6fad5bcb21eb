"""Run logging: a local ``metrics.jsonl`` plus wandb (offline unless told otherwise)."""

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from mixerflow.core.errors import UserError
from mixerflow.core.files import atomic_write_text
from mixerflow.training.config import Config


class RunLog:
    """Append one JSON line per record to ``run_dir/metrics.jsonl`` and mirror it to wandb.

    ``resumed_at``: the step of the checkpoint a resumed run starts from; records after it
    (which the run will write again) are dropped. None: a new run, which starts the file
    afresh (a file left there belongs to a run that wrote no checkpoint).
    """

    def __init__(self, run_dir: Path, cfg: Config, resumed_at: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        _keep_records_until(self.path, resumed_at)
        self.wandb_run = None
        mode = os.environ.get("WANDB_MODE") or cfg.log.wandb
        if mode != "disabled":
            self.wandb_run = _start_wandb(run_dir, cfg, mode)

    def log(self, record: dict[str, Any]) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # a full disk: the last checkpoint stays as it was
            raise UserError(f"cannot write {self.path}: {err.strerror or err}") from None
        if self.wandb_run is not None:
            step = record.get("step")
            self.wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _keep_records_until(path: Path, step: int | None) -> None:
    if not path.exists():
        return
    kept = []
    if step is not None:
        lines = _read_lines(path)
        for number, line in enumerate(lines, 1):
            record = _record(line)
            if record is None and number < len(lines):
                raise UserError(f"{path} is damaged: line {number} is not a record of ours; "
                                "repair it or move it aside to resume")
            if record is not None and record.get("step", 0) <= step and \
                    "test_bpd" not in record:
                kept.append(line + "\n")  # (a last line cut short by a kill goes)
    atomic_write_text(path, "".join(kept))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is damaged: it is not text; repair it or move it aside to "
                        "resume") from None


def _record(line: str) -> dict | None:
    """A metrics line as its record: a JSON object whose step, if any, is an integer."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step", 0) if isinstance(record, dict) else None
    return record if type(step) is int else None


def _start_wandb(run_dir: Path, cfg: Config, mode: str):
    """A wandb run that a resumed training continues (its id is kept in the run folder)."""
    id_file = run_dir / "wandb_id"
    try:
        import wandb

        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        atomic_write_text(id_file, run_id)
        return wandb.init(
            project=cfg.log.project,
            dir=str(run_dir),
            mode=mode,
            id=run_id,
            resume="allow",
            config=cfg.to_dict(),
        )
    except Exception as err:  # logging must never cost the user a training run
        print(f"warning: wandb disabled ({err})", file=sys.stderr)
        return None
