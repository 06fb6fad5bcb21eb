"""Image data sets as uint8 tensors ``(N, C, H, W)`` with labels, and their fixed splits.

Sources: scikit-learn's bundled 8x8 digits (offline, 17 levels); MNIST and
FashionMNIST (torchvision's ``raw/`` idx files, gzipped or not); CIFAR-10
(``cifar10/{train,test}.npz`` or torchvision's python pickles); any
``npz:DIR`` holding ``train.npz``/``test.npz`` in the downsampled-ImageNet format
(``data`` N x 3·s·s uint8 CHW rows + ``labels``); and ``folder:DIR`` with
``train/<class>/*`` and ``test/<class>/*`` images. Nothing is downloaded unless
``data.download`` is set.
"""

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mixerflow.errors import UserError
from mixerflow.store import (
    IndexedImages,
    as_pixels,
    collect,
    folder_images,
    read_npz,
    read_store,
)

SPLIT_SEED = 20240601  # fixes the validation split independently of the training seed


@dataclass
class ImageSet:
    """``images`` uint8 ``(N, C, H, W)`` in ``{0, …, num_levels-1}``; ``labels`` int64 ``(N,)``.

    ``mapped``: the images are a memory-mapped store's (pages read on use, shared by the
    processes of a machine), so subsets index them instead of copying.
    """

    images: torch.Tensor | IndexedImages
    labels: torch.Tensor
    mapped: bool = False

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_levels: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def data_root(root: str | None) -> Path:
    """The folder that holds local data: ``root``, else ``$MIXERFLOW_DATA``, else ``./data``."""
    return Path(root or os.environ.get("MIXERFLOW_DATA") or "data")


def _as_set(images: np.ndarray, labels: np.ndarray, source: str = "") -> ImageSet:
    """uint8 images with int64 labels; ``source`` names the files in a count mismatch."""
    if len(labels) != len(images):
        raise UserError(f"{source}: {len(labels)} labels for {len(images)} images")
    return ImageSet(
        torch.from_numpy(np.array(images, dtype=np.uint8)),
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
    )


def _digits() -> tuple[ImageSet, ImageSet]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # values 0..16
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    test, train = order[:360], order[360:]
    return _as_set(images[train], bunch.target[train]), _as_set(images[test], bunch.target[test])


def _read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (MNIST's format), checked against its own header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} cannot be read ({err}); replace it with a good copy") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise UserError(f"{path} is not an idx file of unsigned bytes (MNIST's format)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) < header or len(raw) - header != int(np.prod(shape)):
        raise UserError(f"{path} is truncated or corrupt: its header announces {shape} values, "
                        f"it holds {max(len(raw) - header, 0)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_file(raw_dir: Path, stem: str) -> Path:
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"{stem}[.gz] not found in {raw_dir}; point --data-root (or MIXERFLOW_DATA) at a "
        "folder holding torchvision's layout, or set data.download=true"
    )


def _mnist_like(root: Path, folder: str, download: bool) -> tuple[ImageSet, ImageSet]:
    raw_dir = root / folder / "raw"
    if download:
        import torchvision

        dataset_cls = getattr(torchvision.datasets, folder)
        try:
            for train in (True, False):
                dataset_cls(str(root), train=train, download=True)
        except (RuntimeError, OSError) as err:  # torchvision wraps network errors so
            reason = str(err).strip().splitlines()[-1]
            raise UserError(f"data.download=true: could not download {folder} into {root} "
                            f"({reason}); copy its raw/ files there instead") from None
    sets = []
    for prefix in ("train", "t10k"):
        images = _read_idx(_idx_file(raw_dir, f"{prefix}-images-idx3-ubyte"))
        labels_path = _idx_file(raw_dir, f"{prefix}-labels-idx1-ubyte")
        sets.append(_as_set(images[:, None], _read_idx(labels_path), str(labels_path)))
    return sets[0], sets[1]


def _npz_split(path: Path) -> ImageSet:
    data, labels = read_npz(path)
    if data.ndim != 2 or data.shape[1] < 3:
        raise UserError(f"{path}: 'data' is {data.shape}; expected one row of 3 x s x s values "
                        "per image")
    side = int(round((data.shape[1] / 3) ** 0.5))
    if 3 * side * side != data.shape[1]:
        raise UserError(f"{path}: rows of {data.shape[1]} values are not 3 x s x s images")
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: 'labels' is {labels.shape} {labels.dtype}; expected one "
                        f"integer per image ({len(data)})")
    return _as_set(as_pixels(data, str(path)).reshape(-1, 3, side, side), labels)


def _npz_dir(folder: Path) -> tuple[ImageSet, ImageSet]:
    paths = [folder / "train.npz", folder / "test.npz"]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path} not found; expected train.npz and test.npz in {folder}")
    return _npz_split(paths[0]), _npz_split(paths[1])


def _cifar10(root: Path, download: bool) -> tuple[ImageSet, ImageSet]:
    if (root / "cifar10" / "train.npz").is_file():
        return _npz_dir(root / "cifar10")
    import torchvision

    pickles = root / "cifar-10-batches-py"
    if not pickles.is_dir() and not download:
        raise UserError(
            f"CIFAR-10 not found: neither {root / 'cifar10'}/{{train,test}}.npz nor {pickles}; "
            "pass --data-root (or MIXERFLOW_DATA), or set data.download=true"
        )
    sets = []
    for train in (True, False):
        ds = torchvision.datasets.CIFAR10(str(root), train=train, download=download)
        sets.append(_as_set(ds.data.transpose(0, 3, 1, 2), ds.targets))
    return sets[0], sets[1]


def _folder(folder: Path, image_size: int | None) -> tuple[ImageSet, ImageSet]:
    """An image folder in memory; test classes are numbered as train's (see the store's)."""
    splits = folder_images(folder, image_size)
    return tuple(ImageSet(*collect(*splits[name])) for name in ("train", "test"))


def _store(folder: Path) -> tuple[ImageSet, ImageSet, int]:
    meta, tensors = read_store(folder)
    train, test = (ImageSet(*tensors[name], mapped=True) for name in ("train", "test"))
    return train, test, meta["num_levels"]


def _named_store(root: Path, name: str) -> tuple[ImageSet, ImageSet, int]:
    folder = root / name
    if not (folder / "meta.json").is_file():
        raise UserError(f"{name} is read from a prepared store at {folder}, which is missing; "
                        f"make it with: mixerflow prepare {name} --src DIR_OF_BATCH_FILES "
                        f"--data-root {root}")
    return _store(folder)


def load_train_test(cfg) -> tuple[ImageSet, ImageSet, int]:
    """Train and test sets plus the number of levels, for a :class:`DataConfig`."""
    root = data_root(cfg.root)
    if cfg.name in STORE_NAMES:
        return _named_store(root, cfg.name)
    if cfg.name.startswith("store:"):
        return _store(Path(cfg.name[6:]))
    if cfg.name == "digits":
        return (*_digits(), 17)
    if cfg.name == "mnist":
        return (*_mnist_like(root, "MNIST", cfg.download), 256)
    if cfg.name == "fashion_mnist":
        return (*_mnist_like(root, "FashionMNIST", cfg.download), 256)
    if cfg.name == "cifar10":
        return (*_cifar10(root, cfg.download), 256)
    if cfg.name.startswith("npz:"):
        return (*_npz_dir(Path(cfg.name[4:])), 256)
    if cfg.name.startswith("folder:"):
        return (*_folder(Path(cfg.name[7:]), cfg.image_size), 256)
    raise UserError(f"unknown data set {cfg.name!r}")


STORE_NAMES = ("imagenet32", "imagenet64")  # read from <root>/<name>, made by prepare
KNOWN_SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
                "cifar10": (3, 32, 32), "imagenet32": (3, 32, 32), "imagenet64": (3, 64, 64)}


def image_shape_of(cfg) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of a :class:`DataConfig`'s images: from the name where it tells
    (so benchmarks run where the data is not), else by loading the data set."""
    if cfg.name in KNOWN_SHAPES:
        return KNOWN_SHAPES[cfg.name]
    return load_splits(cfg).image_shape


def load_splits(cfg) -> Splits:
    """Train / validation / test for a :class:`~mixerflow.config.DataConfig`.

    The validation images are a fixed random subset of train (same for every run):
    ``data.val_size`` of them, or a tenth of train up to 5000. From a
    memory-mapped store the validation images are copied (they are few) and the training
    split indexes the mapped file.
    """
    train, test, num_levels = load_train_test(cfg)
    if train.images.shape[1:] != test.images.shape[1:]:
        raise UserError(f"{cfg.name}: train images are {tuple(train.images.shape[1:])} but "
                        f"test images are {tuple(test.images.shape[1:])}")
    val_size = cfg.val_size or min(5000, max(1, len(train) // 10))
    if val_size >= len(train):
        raise UserError(
            f"config key 'data.val_size' ({val_size}) must be below the "
            f"{len(train)} training images"
        )
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(train)))
    val_idx, train_idx = order[:val_size], order[val_size:]

    def subset(idx: torch.Tensor) -> ImageSet:
        return ImageSet(train.images[idx], train.labels[idx])

    if train.mapped:
        train_split = ImageSet(IndexedImages(train.images, train_idx), train.labels[train_idx],
                               mapped=True)
    else:
        train_split = subset(train_idx)
    return Splits(train_split, subset(val_idx), test, num_levels)


def fits_on(device: torch.device, images: torch.Tensor) -> bool:
    """Whether ``images`` may live on ``device``: always on the CPU; on a GPU when they take
    at most a quarter of its free memory."""
    if device.type != "cuda":
        return True
    free_bytes, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= free_bytes // 4


class BatchSampler:
    """Random training batches: uint8 ``(batch_size, C, H, W)`` on ``device``, drawn with
    replacement by a seeded generator whose state goes into checkpoints.

    ``part=(i, n)``: ``batch_size`` is the global batch of ``n`` processes and this one
    returns its part ``i``. Every process draws the same global indices, so ``n`` processes
    together see exactly the batches of one process, and a resume on any number continues
    the same stream.

    The split is copied to the device once when it fits (:func:`fits_on`), so a step needs
    no host-to-device transfer; otherwise (or from a memory-mapped store) it stays in host
    memory and each batch travels.
    """

    def __init__(self, images: torch.Tensor | IndexedImages, batch_size: int,
                 device: torch.device, seed: int, part: tuple[int, int] = (0, 1)):
        in_memory = isinstance(images, torch.Tensor)  # a mapped store stays mapped
        self.images = images.to(device) if in_memory and fits_on(device, images) else images
        self.batch_size, self.device = batch_size, device
        index, parts = part
        share = batch_size // parts
        self.rows = slice(index * share, (index + 1) * share)
        self.generator = torch.Generator(device=self.images.device).manual_seed(seed)

    def __call__(self) -> torch.Tensor:
        index = torch.randint(len(self.images), (self.batch_size,), generator=self.generator,
                              device=self.images.device)
        return self.images[index[self.rows]].to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
