"""Sample grids: images ``(N, C, H, W)`` with ``num_levels`` levels -> one PNG."""

import math
from pathlib import Path

import torch
import torchvision


def image_grid(images: torch.Tensor, num_levels: int, nrow: int | None = None) -> torch.Tensor:
    """A float ``(C, H', W')`` grid in ``[0, 1]``, small images upscaled to at least 32 px."""
    values = images.float().cpu() / (num_levels - 1)
    scale = max(1, math.ceil(32 / images.shape[-1]))
    if scale > 1:
        values = torch.nn.functional.interpolate(values, scale_factor=scale, mode="nearest")
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    return torchvision.utils.make_grid(values, nrow=nrow, padding=2, pad_value=1.0)


def save_grid(
    images: torch.Tensor, num_levels: int, path: str | Path, nrow: int | None = None
) -> None:
    """Write ``images`` as one PNG grid at ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(image_grid(images, num_levels, nrow), str(path))
