"""The three splits of a run: train and test from the source, validation a fixed random
subset of train (the same for every run)."""

import numpy as np
import torch

from mixerflow.core.errors import UserError
from mixerflow.data.images import ImageSet, IndexedImages, Splits
from mixerflow.data.sources import SPLIT_SEED, DataConfig, find_source, load_train_test


def load_splits(cfg: DataConfig) -> Splits:
    """Train / validation / test for a :class:`DataConfig`.

    The validation images are a fixed random subset of train (same for every run):
    ``data.val_size`` of them, or a tenth of train up to 5000. From a
    memory-mapped store the validation images are copied (they are few) and the training
    split indexes the mapped file.
    """
    train, test, num_levels = load_train_test(cfg)
    for name, part in (("train", train), ("test", test)):
        if len(part) == 0:
            raise UserError(f"{cfg.name}: the {name} split holds no images")
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


def image_shape_of(cfg: DataConfig) -> tuple[int, int, int]:
    """The ``(C, H, W)`` of a :class:`DataConfig`'s images: from the name where it tells
    (so benchmarks run where the data is not), else by loading the data set."""
    source, _ = find_source(cfg.name)
    return source.shape or load_splits(cfg).image_shape
