"""Random training batches, drawn on the device from a seeded stream that checkpoints keep."""

import torch

from mixerflow.core.device import available_bytes
from mixerflow.data.images import IndexedImages


def fits_on(device: torch.device, images: torch.Tensor) -> bool:
    """Whether ``images`` may live on ``device``: always on the CPU; on a GPU when they take
    at most a quarter of its free memory."""
    if device.type != "cuda":
        return True
    return images.numel() * images.element_size() <= available_bytes(device) // 4


class BatchSampler:
    """Random training batches: uint8 ``(batch_size, C, H, W)`` on ``device`` and, where
    ``labels (N,)`` are given, their int64 labels ``(batch_size,)`` (else None), drawn with
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
                 device: torch.device, seed: int, part: tuple[int, int] = (0, 1),
                 labels: torch.Tensor | None = None):
        in_memory = isinstance(images, torch.Tensor)  # a mapped store stays mapped
        self.images = images.to(device) if in_memory and fits_on(device, images) else images
        self.labels = None if labels is None else labels.to(self.images.device)
        self.batch_size, self.device = batch_size, device
        index, parts = part
        share = batch_size // parts
        self.rows = slice(index * share, (index + 1) * share)
        self.generator = torch.Generator(device=self.images.device).manual_seed(seed)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        index = torch.randint(len(self.images), (self.batch_size,), generator=self.generator,
                              device=self.images.device)[self.rows]
        images = self.images[index].to(self.device, non_blocking=True)
        if self.labels is None:
            return images, None
        return images, self.labels[index].to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
