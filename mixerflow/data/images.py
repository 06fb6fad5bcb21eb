"""The containers of image data: an :class:`ImageSet` (uint8 images ``(N, C, H, W)`` and
labels), the three :class:`Splits` a run uses, and :class:`IndexedImages`, the rows of a
memory-mapped store that a split takes without a copy."""

from dataclasses import dataclass

import torch

SPLIT_NAMES = ("train", "test")  # what a data source provides; validation is cut from train


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
