"""Run logging: a local ``metrics.jsonl`` plus wandb (offline unless told otherwise)."""

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from mixerflow.config import Config


class RunLog:
    """Append one JSON line per record to ``run_dir/metrics.jsonl`` and mirror it to wandb."""

    def __init__(self, run_dir: Path, cfg: Config):
        self.path = run_dir / "metrics.jsonl"
        self.wandb_run = None
        mode = os.environ.get("WANDB_MODE") or cfg.log.wandb
        if mode != "disabled":
            self.wandb_run = _start_wandb(run_dir, cfg, mode)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            step = record.get("step")
            self.wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _start_wandb(run_dir: Path, cfg: Config, mode: str):
    """A wandb run that a resumed training continues (its id is kept in the run folder)."""
    id_file = run_dir / "wandb_id"
    try:
        import wandb

        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id)
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
