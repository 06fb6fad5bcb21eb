"""A memory-mapped image store for data sets larger than RAM.

``mixerflow prepare`` converts a source once into a folder of ``.npy`` files that every
process maps read-only: N ranks on one machine share one copy through the page cache, and a
batch reads only its own rows. Layout::

    meta.json          {"format", "source", "num_levels", "splits": {name: {"count",
                        "shape", "sha256": {file: hex}}}}
    train_images.npy   uint8 (N, C, H, W)      train_labels.npy   int64 (N,)
    test_images.npy    uint8 (M, C, H, W)      test_labels.npy    int64 (M,)

Sources: the downsampled-ImageNet batch files (``train_data_batch_*.npz`` and
``val_data.npz``, 32x32 or 64x64, streamed file by file), an image folder (streamed image
by image), and any data set the loader reads (CIFAR-10, MNIST, ``npz:DIR`` …).
"""

import hashlib
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mixerflow.errors import UserError

FORMAT = "mixerflow-store-v1"
SPLIT_NAMES = ("train", "test")
Chunks = Iterator[tuple[np.ndarray, np.ndarray]]  # (uint8 images (n, C, H, W), labels (n,))


class IndexedImages:
    """Rows ``index`` of a (memory-mapped) uint8 tensor ``base``, gathered only when asked
    for: the training split of a store without a copy. Indexes like a tensor."""

    def __init__(self, base: torch.Tensor, index: torch.Tensor):
        self.base, self.index = base, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key) -> torch.Tensor:
        return self.base[self.index[key]]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.base.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.base.device


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_store(out: Path, source: str, splits: dict[str, tuple[int, tuple, Chunks]],
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
        _fill(images, labels, chunks, name, bar.update)
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


# --- sources ---------------------------------------------------------------------------


def _npz_member_shape(path: Path, member: str) -> tuple[int, ...]:
    """The shape of array ``member`` in an .npz, read from its header (no data loaded)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{member}.npy") as f:
            version = np.lib.format.read_magic(f)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            return reader(f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is not an .npz with {member!r} ({err})") from None


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``data`` and ``labels`` arrays of an image .npz; a damaged file is a UserError."""
    try:
        with np.load(path) as archive:
            return archive["data"], archive["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is not an image .npz with 'data' and 'labels' ({err})") from None


def _batch_files_chunks(paths: list[Path], side: int) -> Chunks:
    for path in paths:
        data, labels = read_npz(path)
        data, labels = as_pixels(data, str(path)), np.asarray(labels, dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * side * side or len(labels) != len(data):
            raise UserError(f"{path}: expected 'data' rows of 3x{side}x{side} values and one "
                            f"label per row, got {data.shape} and {len(labels)} labels")
        yield data.reshape(-1, 3, side, side), labels


def imagenet_batches(src: Path, side: int) -> dict[str, tuple[int, tuple, Chunks]]:
    """Downsampled ImageNet (Chrabaszcz et al. 2017): ``train_data_batch_<k>.npz`` in k order
    and ``val_data.npz`` (the test split), rows of ``3·side²`` uint8 CHW values."""
    src = Path(src)
    number = re.compile(r"train_data_batch_(\d+)\.npz$")
    train = sorted((p for p in src.glob("train_data_batch_*.npz") if number.search(p.name)),
                   key=lambda p: int(number.search(p.name).group(1)))
    val = src / "val_data.npz"
    if not train or not val.is_file():
        raise UserError(f"{src} does not hold train_data_batch_*.npz and val_data.npz "
                        "(the downsampled-ImageNet files)")
    splits = {}
    for name, paths in (("train", train), ("test", [val])):
        counts = [_npz_member_shape(p, "data") for p in paths]
        bad = [p for p, c in zip(paths, counts, strict=True) if c[1:] != (3 * side * side,)]
        if bad:
            raise UserError(f"{bad[0]} does not hold {side}x{side} images (rows of "
                            f"{_npz_member_shape(bad[0], 'data')[1:]} values)")
        splits[name] = (sum(c[0] for c in counts), (3, side, side),
                        _batch_files_chunks(paths, side))
    return splits


def _open_image(path: str):
    """An image file as PIL: grayscale ones stay one channel, the rest become RGB."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("L" if image.mode in ("1", "L", "LA") else "RGB")
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise UserError(f"{path} is not a readable image ({err})") from None


def folder_images(src: Path, image_size: int | None) -> dict[str, tuple[int, tuple, Chunks]]:
    """``train/<class>/*`` and ``test/<class>/*`` image files, streamed one by one; classes
    are numbered by their sorted names in train (test must use the same names). Grayscale
    folders give one channel; every image must have the same size and channels."""
    import torchvision
    from torchvision.transforms import v2

    steps = [v2.PILToTensor()]
    if image_size:
        steps.insert(0, v2.Resize((image_size, image_size)))
    splits, classes = {}, None
    for name in SPLIT_NAMES:
        folder = Path(src) / name
        if not folder.is_dir():
            raise UserError(f"image folder {folder} not found (expected train/ and test/)")
        try:
            dataset = torchvision.datasets.ImageFolder(str(folder), transform=v2.Compose(steps),
                                                       loader=_open_image)
        except (FileNotFoundError, OSError) as err:  # e.g. a class folder with no image
            raise UserError(f"image folder {folder}: {err}") from None
        classes = classes or dataset.classes
        unknown = sorted(set(dataset.classes) - set(classes))
        if unknown:
            raise UserError(f"{folder} has classes that train/ lacks: {', '.join(unknown)}")
        remap = np.array([classes.index(c) for c in dataset.classes], dtype=np.int64)
        shape = tuple(dataset[0][0].shape)

        def chunks(dataset=dataset, remap=remap, shape=shape) -> Chunks:
            for (path, label), (image, _) in zip(dataset.samples, dataset, strict=True):
                if tuple(image.shape) != shape:
                    raise UserError(f"{path} is {tuple(image.shape)} (channels, height, width) "
                                    f"but the first image is {shape}; set data.image_size or "
                                    "make the channels agree")
                yield image.numpy()[None], remap[[label]]

        splits[name] = (len(dataset), shape, chunks())
    return splits


def _fill(images: np.ndarray, labels: np.ndarray, chunks: Chunks, name: str,
          progress=lambda n: None) -> None:
    """Copy ``chunks`` into ``images (count, *shape)`` and ``labels``, checking that the
    source holds exactly the images it announced, all of one shape."""
    count, shape = len(images), tuple(images.shape[1:])
    filled = 0
    for chunk_images, chunk_labels in chunks:
        if tuple(chunk_images.shape[1:]) != shape:
            raise UserError(f"{name}: images of shape {tuple(chunk_images.shape[1:])} "
                            f"among images of shape {shape}")
        end = filled + len(chunk_images)
        if end > count:
            raise UserError(f"{name}: the source holds more than the {count} images it announced")
        images[filled:end], labels[filled:end] = chunk_images, chunk_labels
        filled = end
        progress(len(chunk_images))
    if filled != count:
        raise UserError(f"{name}: the source announced {count} images but held {filled}")


def collect(count: int, shape: tuple, chunks: Chunks) -> tuple[torch.Tensor, torch.Tensor]:
    """A source's chunks gathered in memory: images ``(count, *shape)`` uint8, labels."""
    images, labels = np.empty((count, *shape), dtype=np.uint8), np.empty(count, dtype=np.int64)
    _fill(images, labels, chunks, "images")
    return torch.from_numpy(images), torch.from_numpy(labels)


def as_pixels(data: np.ndarray, where: str) -> np.ndarray:
    """``data`` as uint8 pixel values, refusing what a cast would silently change (floats in
    [0, 1), values outside 0..255)."""
    if data.dtype == np.uint8:
        return data
    if not np.issubdtype(data.dtype, np.integer):
        raise UserError(f"{where}: pixel data are {data.dtype}; expected integers 0..255 "
                        "(uint8)")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise UserError(f"{where}: pixel values span {data.min()}..{data.max()}; expected "
                        "0..255")
    return data.astype(np.uint8)


def loaded_sets(train, test) -> dict[str, tuple[int, tuple, Chunks]]:
    """Sets already in memory (:class:`~mixerflow.data.ImageSet`) as one chunk each."""
    return {name: (len(data), tuple(data.images.shape[1:]),
                   iter([(data.images.numpy(), data.labels.numpy())]))
            for name, data in (("train", train), ("test", test))}
