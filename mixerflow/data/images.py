"""The containers of image data: an :class:`ImageSet` (uint8 images ``(N, C, H, W)`` and
labels), the three :class:`Splits` a run uses, and :class:`IndexedImages`, the rows of a
memory-mapped store that a split takes without a copy."""

from dataclasses import dataclass

import torch

from mixerflow.core.errors import UserError

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

    def class_count(self, data: str) -> int:
        """``K``, the classes the labels number (``0 … K-1``, ``K`` one past the largest
        training label): what a class-conditional model of the data (named ``data`` in
        messages) is built for. A UserError where the training labels are not those of at
        least two classes, or a validation or test label lies outside them."""
        labels = self.train.labels
        if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) < 1:
            raise UserError(f"model.class_conditional: {data} has no labels of two or more "
                            f"classes (labels 0, 1, …) to condition on")
        count = int(labels.max()) + 1
        for name, part in (("validation", self.val), ("test", self.test)):
            require_labels(part.labels, count, f"{data}'s {name} split")
        return count


def require_labels(labels: torch.Tensor, num_classes: int, data: str) -> None:
    """Labels (named ``data`` in the message) that a model of ``num_classes`` classes takes:
    ``0 … num_classes-1``; else a UserError."""
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise UserError(f"{data} holds labels {int(labels.min())} … {int(labels.max())}; the "
                        f"model knows classes 0 … {num_classes - 1}")
