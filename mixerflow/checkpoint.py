"""Checkpoints: a dict of tensors and plain values, written atomically, read weights-only."""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mixerflow.config import Config, config_from_dict
from mixerflow.errors import UserError
from mixerflow.models.flow import ImageFlow, build_model

FORMAT = "mixerflow-checkpoint-v1"


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so ``path`` is never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a run folder is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(path: Path, flow: ImageFlow, cfg: Config, **training_state: Any) -> None:
    """Write the model, its config and data shape, plus any training state (optimizer, step…)."""
    payload = {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "image_shape": list(flow.image_shape),
        "num_levels": flow.num_levels,
        "model": flow.state_dict(),
        **training_state,
    }
    atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, tensors on the CPU; a missing, corrupt or foreign file is a
    :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        text = str(err)
        if "Unsupported global" in text:  # never pass on torch's advice to unpickle it anyway
            raise UserError(f"{str(path)!r} is not a mixerflow checkpoint: it holds Python "
                            "objects beyond tensors and plain values, and is not loaded") from None
        reason = text.splitlines()[0] if text else type(err).__name__
        if "Weights only load failed" in text:
            detail = text.partition("WeightsUnpickler error:")[2].strip().splitlines()
            reason = f"unpickling failed: {detail[0] if detail else 'unreadable'}"
        message = f"checkpoint {str(path)!r} is corrupt or not a torch file ({reason})"
        raise UserError(message) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} is not a mixerflow checkpoint")
    return payload


def flow_from_checkpoint(payload: dict[str, Any]) -> tuple[ImageFlow, Config]:
    """Rebuild the model of a checkpoint dict (on the CPU) and load its weights."""
    cfg = config_from_dict(payload["config"])
    flow = build_model(cfg.model, tuple(payload["image_shape"]), payload["num_levels"])
    flow.load_state_dict(payload["model"])
    return flow, cfg


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> ImageFlow:
    """Load a trained :class:`ImageFlow` in eval mode; its run config is ``flow.config``."""
    flow, cfg = flow_from_checkpoint(read_checkpoint(path))
    flow.config = cfg
    return flow.to(device).eval()
