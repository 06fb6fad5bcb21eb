"""Where images come from: the data-set registry and the ``data`` config section.

A data set is one :class:`Source` entry (one :func:`register_source` call): its name, how it
loads, and what is known before loading. Named sets: scikit-learn's bundled 8x8 digits
(offline, 17 levels); MNIST and FashionMNIST (torchvision's ``raw/`` idx files, gzipped or
not); CIFAR-10 (``cifar10/{train,test}.npz`` or torchvision's python pickles); downsampled
ImageNet 32/64 (a store prepared under the data root). Sets at a path, ``KIND:DIR``:
``npz:DIR`` (``train.npz``/``test.npz`` in the downsampled-ImageNet format), ``folder:DIR``
(``train/<class>/*``, ``test/<class>/*`` images) and ``store:DIR`` (a store made by
``mixerflow prepare``). Nothing is downloaded unless ``data.download`` is set.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mixerflow.core import schema
from mixerflow.core.device import MAX_SEED
from mixerflow.core.errors import UserError
from mixerflow.core.files import distinct_files
from mixerflow.data.formats import (
    Streams,
    as_pixels,
    collect,
    folder_images,
    imagenet_batches,
    loaded_sets,
    read_idx,
    read_npz,
)
from mixerflow.data.images import ImageSet
from mixerflow.data.store import read_store

SPLIT_SEED = 20240601  # fixes the validation split independently of the training seed


@dataclass
class DataConfig:
    """Which images: a named data set or ``KIND:DIR`` (see :data:`SOURCES`)."""

    name: str = "digits"
    root: str | None = None  # local copies; else $MIXERFLOW_DATA, else ./data
    val_size: int | None = None  # images carved from train for validation; None: a tenth
    # of train, at most 5000
    download: bool = False  # torchvision data sets only; never implicit
    image_size: int | None = None  # folder:DIR only: resize to this square size
    permute_pixels: int | None = None  # seed of one fixed pixel permutation for every image

    def validate(self) -> None:
        source, _ = find_source(self.name)
        schema.require(self.image_size is None or source.resizes, "data.image_size",
                       f"resizes image folders only; {self.name} keeps its size")
        schema.require(not self.download or source.downloads, "data.download",
                       f"has no effect for {self.name}, which is never downloaded")
        schema.require(self.val_size is None or self.val_size >= 1, "data.val_size",
                       "must be at least 1")
        schema.require(self.image_size is None or self.image_size >= 2, "data.image_size",
                       "must be at least 2")
        schema.require(self.permute_pixels is None or 0 <= self.permute_pixels <= MAX_SEED,
                       "data.permute_pixels", f"must be a seed in 0..{MAX_SEED}")

    def make_paths_absolute(self) -> None:
        """Data paths as absolute paths, so a run's checkpoint finds its data from anywhere."""
        kind, sep, path = self.name.partition(":")
        if sep and kind in SOURCES and SOURCES[kind].takes_path:
            self.name = f"{kind}:{Path(path).expanduser().absolute()}"
        if self.root is not None:
            self.root = str(Path(self.root).expanduser().absolute())


def data_root(root: str | None) -> Path:
    """The folder that holds local data: ``root``, else ``$MIXERFLOW_DATA``, else ``./data``."""
    return Path(root or os.environ.get("MIXERFLOW_DATA") or "data")


Loaded = tuple[ImageSet, ImageSet, int]  # train, test, number of levels


@dataclass(frozen=True)
class Source:
    """A data set: ``load(data config, where)`` gives train, test and the number of levels,
    ``where`` being the data root, or the folder of ``name:DIR`` when ``takes_path``.

    ``shape``: the images' ``(C, H, W)`` where it is known without loading (so a benchmark
    runs where the data is not). ``stream(data config, where, src)``: the splits as chunks for
    ``mixerflow prepare`` (default: loaded, then one chunk per split). ``prepared``: read
    from a store that ``prepare`` writes at ``<data root>/<name>`` from ``--src`` files.
    ``resizes``: its images are resized to ``data.image_size`` when that is set.
    ``reads_root``: its files lie under the data root (``data.root``, ``--data-root``).
    """

    name: str
    load: Callable[["DataConfig", Path], Loaded]
    shape: tuple[int, int, int] | None = None
    takes_path: bool = False
    stream: Callable[["DataConfig", Path, Path | None], tuple[Streams, int]] | None = None
    prepared: bool = False
    resizes: bool = False  # honours data.image_size
    downloads: bool = False  # honours data.download
    reads_root: bool = False  # honours data.root


SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> None:
    """Make ``data.name: <source.name>`` (or ``<source.name>:DIR``) loadable."""
    SOURCES[source.name] = source


def source_names() -> str:
    """``digits, mnist, …, npz:DIR or store:DIR``: what ``data.name`` may be."""
    names = [f"{name}:DIR" if source.takes_path else name for name, source in SOURCES.items()]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def find_source(name: str) -> tuple[Source, Path | None]:
    """The source ``data.name`` names, and its folder for ``KIND:DIR`` names."""
    kind, sep, path = name.partition(":")
    source = SOURCES.get(kind)
    if source is not None and source.takes_path == bool(sep) and (path or not sep):
        return source, Path(path) if sep else None
    raise UserError(f"config key 'data.name' must be one of {source_names()}; got {name!r}")


def root_unused(name: str) -> str | None:
    """Why a data root means nothing to the set ``data.name`` names; None where it reads one.
    (Checked where a user gives a root, not in :meth:`DataConfig.validate`: a checkpoint
    saved with such a root must still load.)"""
    source, path = find_source(name)
    if source.reads_root:
        return None
    return f"{name} names its own folder" if path is not None else \
        f"{name} is bundled with the code, not read from a folder"


def located(cfg: DataConfig) -> tuple[Source, Path]:
    """The source ``cfg`` names and where it reads: the DIR of ``KIND:DIR``, else the data
    root."""
    source, path = find_source(cfg.name)
    return source, path if path is not None else data_root(cfg.root)


def data_folders(cfg: DataConfig) -> dict[str, Path]:
    """The user's data folder a ``KIND:DIR`` name reads (none for named sets): an input that
    outputs must stay out of."""
    source, path = find_source(cfg.name)
    return {f"the data ({cfg.name})": path} if path is not None else {}


def load_train_test(cfg: DataConfig) -> Loaded:
    """Train and test sets plus the number of levels, for a :class:`DataConfig`."""
    source, where = located(cfg)
    return source.load(cfg, where)


def prepare_streams(cfg: DataConfig, src: Path | None) -> tuple[Streams, int]:
    """The splits of ``cfg``'s data as chunks for a store, and the number of levels."""
    source, where = located(cfg)
    if source.stream is not None:
        return source.stream(cfg, where, src)
    train, test, levels = source.load(cfg, where)
    return loaded_sets(train, test), levels


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
    files = {prefix: [_idx_file(raw_dir, f"{prefix}-{kind}") for kind in
                      ("images-idx3-ubyte", "labels-idx1-ubyte")] for prefix in ("train", "t10k")}
    distinct_files([*files["train"], *files["t10k"]], str(raw_dir))
    sets = []
    for images_path, labels_path in files.values():
        images = read_idx(images_path)
        sets.append(_as_set(images[:, None], read_idx(labels_path), str(labels_path)))
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
    distinct_files(paths, str(folder))
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


def _imagenet(side: int) -> Source:
    def stream(cfg: DataConfig, root: Path, src: Path | None) -> tuple[Streams, int]:
        if src is None:
            raise UserError(f"prepare imagenet{side} needs --src, the folder of "
                            "train_data_batch_*.npz and val_data.npz")
        return imagenet_batches(src, side), 256

    return Source(f"imagenet{side}", lambda cfg, root: _named_store(root, cfg.name),
                  shape=(3, side, side), stream=stream, prepared=True, reads_root=True)


register_source(Source("digits", lambda cfg, root: (*_digits(), 17), shape=(1, 8, 8)))
register_source(Source("mnist", lambda cfg, root: (*_mnist_like(root, "MNIST", cfg.download),
                                                   256), shape=(1, 28, 28), downloads=True,
                       reads_root=True))
register_source(Source("fashion_mnist", lambda cfg, root: (
    *_mnist_like(root, "FashionMNIST", cfg.download), 256), shape=(1, 28, 28), downloads=True,
    reads_root=True))
register_source(Source("cifar10", lambda cfg, root: (*_cifar10(root, cfg.download), 256),
                       shape=(3, 32, 32), downloads=True, reads_root=True))
register_source(_imagenet(32))
register_source(_imagenet(64))
register_source(Source("npz", lambda cfg, path: (*_npz_dir(path), 256), takes_path=True))
register_source(Source(
    "folder", lambda cfg, path: (*_folder(path, cfg.image_size), 256), takes_path=True,
    stream=lambda cfg, path, src: (folder_images(path, cfg.image_size), 256), resizes=True))
register_source(Source("store", lambda cfg, path: _store(path), takes_path=True))
