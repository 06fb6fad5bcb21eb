"""Checkpoints: a dict of tensors and plain values, written atomically, read weights-only."""

from pathlib import Path
from typing import Any

import torch

from mixerflow.core.errors import UserError
from mixerflow.core.files import atomic_write
from mixerflow.models.flow import ImageFlow, build_model
from mixerflow.models.kind import MODEL_KINDS, model_keys
from mixerflow.training.config import Config, config_from_dict

FORMAT = "mixerflow-checkpoint-v1"
MODEL_KEYS = ("config", "image_shape", "num_levels", "model")  # what rebuilds the flow
TRAINING_KEYS = ("optimizer", "step", "elapsed", "rng")  # what a resume needs beside it
KEY_TYPES = {"config": dict, "image_shape": list, "num_levels": int, "model": dict,
             "optimizer": dict, "step": int, "elapsed": int | float, "rng": torch.Tensor}


def save_checkpoint(path: Path, flow: ImageFlow, cfg: Config, **training_state: Any) -> None:
    """Write the model, its config and data shape, plus any training state (optimizer, step…)."""
    payload = {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "image_shape": list(flow.image_shape),
        "num_levels": flow.num_levels,
        "num_classes": flow.num_classes,
        "model": flow.state_dict(),
        **training_state,
    }
    atomic_write(Path(path), lambda file: torch.save(payload, file))


def read_checkpoint(path: str | Path, keys: tuple[str, ...] = MODEL_KEYS) -> dict[str, Any]:
    """The raw checkpoint dict, tensors on the CPU; a missing, corrupt or foreign file, or
    one that lacks any of ``keys``, is a :class:`UserError`."""
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
    missing = [key for key in keys if key not in payload]
    if missing:
        raise UserError(f"checkpoint {str(path)!r} is damaged: it lacks "
                        f"{', '.join(repr(key) for key in missing)}")
    for key in keys:
        _check_field(payload[key], key, path)
    return payload


def _check_field(value: Any, key: str, path: Path) -> None:
    """A checkpoint field of the type it is written with (a count: not negative)."""
    expected = KEY_TYPES[key]
    fits = isinstance(value, expected) and not isinstance(value, bool)
    if fits and key in ("step", "elapsed"):
        fits = 0 <= value < float("inf")
    if not fits:
        name = getattr(expected, "__name__", None) or str(expected).replace(" | ", " or ")
        sign = "non-negative finite " if key in ("step", "elapsed") else ""
        raise UserError(f"checkpoint {str(path)!r} is damaged: its {key!r} is {value!r:.40} "
                        f"({type(value).__name__}); expected {sign}{name}")


def flow_from_checkpoint(payload: dict[str, Any], path: str | Path,
                         averaged: bool = False) -> tuple[ImageFlow, Config]:
    """Rebuild the model of a checkpoint dict (on the CPU) and load its weights: the moving
    average of them with ``averaged``, where the run kept one (``train.ema``), else the
    trained ones. A checkpoint whose parts do not fit together is a :class:`UserError`
    naming ``path``."""
    shape, levels = payload["image_shape"], payload["num_levels"]  # a list, an int: read_checkpoint
    if not (len(shape) == 3 and all(type(side) is int and side > 0 for side in shape)
            and levels >= 2):
        raise UserError(f"checkpoint {str(path)!r} is damaged: image_shape {shape!r} or "
                        f"num_levels {levels!r} is not a valid image description")
    try:
        cfg = config_from_dict(upgrade_config_dict(payload["config"]))
    except UserError as err:
        raise UserError(f"checkpoint {str(path)!r} holds a config that does not load: "
                        f"{err}") from None
    classes = payload.get("num_classes", 0)  # absent from checkpoints before issue 24
    if type(classes) is not int or (classes > 0) != cfg.model.class_conditional or classes == 1:
        raise UserError(f"checkpoint {str(path)!r} is damaged: num_classes {classes!r} does "
                        f"not fit model.class_conditional {cfg.model.class_conditional}")
    flow = build_model(cfg.model, tuple(shape), levels, cfg.data.permute_pixels, classes)
    state = payload["model"]
    if averaged and "ema_model" in payload:
        state = payload["ema_model"]
    upgrade = MODEL_KINDS[cfg.model.kind].upgrade_state  # weights renamed since they were saved
    if upgrade is not None and isinstance(state, dict):
        state = upgrade(state)
    try:
        flow.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise UserError(f"checkpoint {str(path)!r} is damaged: its weights do not fit its "
                        f"model ({reason})") from None
    return flow, cfg


def upgrade_config_dict(tree: Any) -> Any:
    """A config saved before each model kind had its own keys (it held every kind's keys,
    and ``couplings`` for ``coupling_layers``) -> today's form; others pass unchanged."""
    if not isinstance(tree, dict) or not isinstance(tree.get("model"), dict):
        return tree
    model = dict(tree["model"])
    kind = model.get("kind")
    known = isinstance(kind, str) and kind in MODEL_KINDS
    own = model_keys(kind) if known else ()
    if "couplings" in model and "coupling_layers" not in model and "couplings" not in own:
        model["coupling_layers"] = model.pop("couplings")  # Jet's own `couplings` stays
    if known:  # other kinds' keys were never read
        every = model_keys()
        model = {k: v for k, v in model.items() if k in own or k not in every}
    return {**tree, "model": model}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> ImageFlow:
    """Load a trained :class:`ImageFlow` in eval mode, with the averaged weights where the
    run kept an average (``train.ema``); its run config is ``flow.config``."""
    flow, cfg = flow_from_checkpoint(read_checkpoint(path), path, averaged=True)
    flow.config = cfg
    return flow.to(device).eval()
