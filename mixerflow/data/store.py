"""A memory-mapped image store for data sets larger than RAM.

``mixerflow prepare`` converts a source once into a folder of ``.npy`` files that every
process maps read-only: N ranks on one machine share one copy through the page cache, and a
batch reads only its own rows. Layout::

    meta.json          {"format", "source", "num_levels", "splits": {name: {"count",
                        "shape", "sha256": {file: hex}}}}
    train_images.npy   uint8 (N, C, H, W)      train_labels.npy   int64 (N,)
    test_images.npy    uint8 (M, C, H, W)      test_labels.npy    int64 (M,)

Any data source can be prepared (:mod:`mixerflow.data.sources`): the downsampled-ImageNet
batch files and image folders are streamed, the rest loaded first.
"""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mixerflow.core.errors import UserError
from mixerflow.data.formats import Chunks, Streams, fill
from mixerflow.data.images import SPLIT_NAMES

FORMAT = "mixerflow-store-v1"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_store(out: Path, source: str, splits: Streams,
                num_levels: int, show_progress: bool = True) -> dict:
    """Write ``splits`` (name -> (count, image shape, chunks)) to the store ``out``.

    The files are written into a temporary folder beside ``out`` and moved into place at the
    end, so a store is never half written. Returns the metadata."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} already exists; delete it or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as err:
        raise UserError(f"cannot write the store {out}: {err.strerror}") from None
    staging.chmod(0o755)  # mkdtemp makes it private; a store is meant to be shared
    meta = {"format": FORMAT, "source": source, "num_levels": num_levels, "splits": {}}
    try:
        for name, (count, shape, chunks) in splits.items():
            meta["splits"][name] = _write_split(staging, name, count, shape, chunks,
                                                show_progress)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        staging.rename(out)
    except OSError as err:  # a full disk, say: nothing half written stays behind
        raise UserError(f"cannot write the store {out}: {err.strerror or err}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return meta


def _write_split(folder: Path, name: str, count: int, shape: tuple, chunks: Chunks,
                 show_progress: bool) -> dict:
    images = np.lib.format.open_memmap(folder / f"{name}_images.npy", mode="w+",
                                       dtype=np.uint8, shape=(count, *shape))
    labels = np.lib.format.open_memmap(folder / f"{name}_labels.npy", mode="w+",
                                       dtype=np.int64, shape=(count,))
    with tqdm(total=count, desc=f"prepare {name}", unit="img", disable=not show_progress,
              dynamic_ncols=True) as bar:
        fill(images, labels, chunks, name, bar.update)
    images.flush()
    labels.flush()
    del images, labels
    files = (f"{name}_images.npy", f"{name}_labels.npy")
    return {"count": count, "shape": list(shape),
            "sha256": {file: _sha256(folder / file) for file in files}}


def read_store(folder: Path) -> tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The store's metadata and, per split, (images (N, C, H, W) uint8, labels (N,) int64)
    as tensors over the mapped files (no copy; pages are read on use)."""
    folder = Path(folder)
    meta = _read_meta(folder)
    tensors = {}
    for name, info in meta["splits"].items():
        images, labels = (_map(folder / f"{name}_{kind}.npy") for kind in ("images", "labels"))
        expected = (info["count"], *info["shape"])
        if images.shape != expected or images.dtype != np.uint8 or labels.shape != \
                (info["count"],):
            raise UserError(f"store {folder}: {name} files do not match meta.json (images "
                            f"{images.shape} {images.dtype}, expected {expected} uint8); "
                            "prepare it again")
        # copy-on-write mapping: writable for torch, shared with other processes until written
        tensors[name] = (torch.from_numpy(images), torch.from_numpy(labels))
    return meta, tensors


def _read_meta(folder: Path) -> dict:
    path = folder / "meta.json"
    if not path.is_file():
        raise UserError(f"{folder} is not a prepared store (no meta.json); "
                        "make one with mixerflow prepare")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or \
            set(meta.get("splits", {})) != set(SPLIT_NAMES):
        raise UserError(f"{path} is not a {FORMAT} store description")
    return meta


def _map(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="c")
    except (OSError, ValueError) as err:
        raise UserError(f"store file {path} is missing or damaged ({err})") from None


def verify_store(folder: Path, show_progress: bool = True) -> None:
    """Recompute every file's sha256 against meta.json; a mismatch is a UserError."""
    meta = _read_meta(Path(folder))
    files = [(file, digest) for info in meta["splits"].values()
             for file, digest in info["sha256"].items()]
    for file, digest in tqdm(files, desc="verify", disable=not show_progress):
        if _sha256(Path(folder) / file) != digest:
            raise UserError(f"store {folder}: {file} does not match its sha256 in meta.json")
