"""Embeddings of a trained flow: ``embed_splits`` runs ``ImageFlow.embed`` over the
train/val/test splits in batches (memory bounded, deterministic); ``write_embeddings`` stores
them as ``embeddings.npz`` and ``read_embeddings`` checks and reads them back.
"""

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mixerflow.core.errors import UserError
from mixerflow.core.files import atomic_write
from mixerflow.data.images import ImageSet, Splits
from mixerflow.models.flow import ImageFlow

SPLITS = ("train", "val", "test")

def embed_images(
    flow: ImageFlow,
    data: ImageSet,
    layer: str = "z",
    pool: str = "none",
    batch_size: int = 500,
    show_progress: bool = False,
    description: str = "",
) -> np.ndarray:
    """float32 features ``(N, F)`` of every image in ``data``, ``batch_size`` at a time."""
    flow.eval()
    device = next(flow.parameters()).device
    parts = []
    starts = range(0, len(data), batch_size)
    for start in tqdm(starts, desc=description, disable=not show_progress, dynamic_ncols=True):
        batch = data.images[start : start + batch_size].to(device)
        parts.append(flow.embed(batch, layer, pool).float().cpu().numpy())
    return np.concatenate(parts)


def subsample(data: ImageSet, limit: int | None) -> ImageSet:
    """The first ``limit`` images (the splits are already shuffled or fixed); all if None."""
    if limit is None or limit >= len(data):
        return data
    return ImageSet(data.images[:limit], data.labels[:limit])


def split_arrays(
    splits: Splits, max_train: int | None, features: Callable[[ImageSet, str], np.ndarray]
) -> dict[str, np.ndarray]:
    """``{train,val,test}_{x,y}``: ``features(images, split name)`` and the labels of every
    split, the train split cut to its first ``max_train`` images."""
    arrays = {}
    for name in SPLITS:
        data = getattr(splits, name)
        if name == "train":
            data = subsample(data, max_train)
        arrays[f"{name}_x"] = features(data, name)
        arrays[f"{name}_y"] = data.labels.numpy()
    return arrays


def embed_splits(
    flow: ImageFlow,
    splits: Splits,
    layer: str = "z",
    pool: str = "none",
    batch_size: int = 500,
    max_train: int | None = None,
    show_progress: bool = False,
) -> dict[str, np.ndarray]:
    """Embeddings and labels of every split (see :func:`split_arrays`)."""
    return split_arrays(splits, max_train, lambda data, name: embed_images(
        flow, data, layer, pool, batch_size, show_progress, description=f"embed {name}"))


def pixel_features(splits: Splits, max_train: int | None = None) -> dict[str, np.ndarray]:
    """The raw-pixel baseline in the same layout as :func:`embed_splits`."""
    return split_arrays(splits, max_train,
                        lambda data, _: data.images[:].reshape(len(data), -1).float().numpy())


def write_embeddings(path: Path, arrays: dict[str, np.ndarray], settings: dict) -> None:
    """``embeddings.npz``: the arrays plus ``settings`` (JSON: checkpoint, layer, pool…)."""
    atomic_write(Path(path), lambda file: np.savez(
        file, **arrays, settings=np.array(json.dumps(settings))))


def read_embeddings(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and settings that :func:`write_embeddings` stored."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"embeddings file {str(path)!r} not found (make one with mixerflow embed)")
    name = f"embeddings file {str(path)!r}"
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{name} is corrupt ({err})") from None
    missing = [f"{s}_{k}" for s in SPLITS for k in "xy" if f"{s}_{k}" not in arrays]
    if missing:
        raise UserError(f"{name} lacks {', '.join(missing)}")
    for split in SPLITS:
        features, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if features.ndim != 2 or labels.shape != (len(features),):
            raise UserError(f"{name} is damaged: {split}_x has {len(features)} rows but "
                            f"{split}_y has {len(labels)} labels")
    try:
        settings = json.loads(str(arrays.pop("settings", "{}")))
    except json.JSONDecodeError as err:
        raise UserError(f"{name} is damaged: its settings are not JSON ({err})") from None
    if not isinstance(settings, dict):
        raise UserError(f"{name} is damaged: its settings are not a JSON object")
    return arrays, settings
