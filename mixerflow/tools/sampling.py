"""Samples, reconstructions and latent interpolations of an ImageFlow, and their PNG grids."""

import math
from pathlib import Path

import torch
import torchvision

from mixerflow.core.files import atomic_write

GRID_LIMIT = 1024  # images a PNG grid shows at most (a larger grid is no use to look at)


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
    """Write ``images`` (the first :data:`GRID_LIMIT` of them) as one PNG grid at ``path``."""
    grid = image_grid(images[:GRID_LIMIT], num_levels, nrow)
    atomic_write(Path(path), lambda file: torchvision.utils.save_image(grid, file, format="png"))


def draw_samples(
    flow, num_samples: int, temperature: float, batch_size: int, seed: int,
    labels: torch.Tensor | None = None, guidance: float | None = None, denoise: bool = False,
) -> torch.Tensor:
    """uint8 samples ``(N, C, H, W)``, ``batch_size`` at a time into one preallocated tensor
    (the only memory that grows with N); the same for the same seed. A class-conditional
    flow draws sample ``i`` of class ``labels[i]`` (None: no class) with ``guidance``;
    ``denoise``: a noisy-image flow's samples denoised (``ImageFlow.denoise``)."""
    generator = torch.Generator().manual_seed(seed)
    samples = torch.empty((num_samples, *flow.image_shape), dtype=torch.uint8)
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        part = None if labels is None else labels[start : start + count]
        samples[start : start + count] = flow.sample(count, temperature, generator=generator,
                                                     labels=part, guidance=guidance,
                                                     denoise=denoise)
    return samples


def reconstruct(flow, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """decode(encode(images)), ``batch_size`` at a time; exact for an invertible flow."""
    device = next(flow.parameters()).device
    parts = [
        flow.decode(flow.encode(images[start : start + batch_size].to(device))).cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(parts)


def slerp(start: torch.Tensor, end: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation: ``steps`` points from ``start`` to ``end`` (same shape), both
    ends included; output ``(steps, *start.shape)``."""
    a, b = start.reshape(-1).double(), end.reshape(-1).double()
    cosine = (a @ b / (a.norm() * b.norm())).clamp(-1, 1)
    omega = torch.arccos(cosine)
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None]
    if omega.abs() < 1e-6:  # (anti-)parallel: fall back to a straight line
        path = (1 - t) * a + t * b
    else:
        path = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return path.to(start.dtype).reshape(steps, *start.shape)


def interpolate(flow, first: torch.Tensor, second: torch.Tensor, steps: int) -> torch.Tensor:
    """uint8 images ``(steps, C, H, W)`` along the latent slerp from image ``first`` to
    ``second`` (each ``(C, H, W)``); the ends are the two images themselves."""
    latents = flow.encode(torch.stack([first, second]).to(next(flow.parameters()).device))
    return flow.decode(slerp(latents[0], latents[1], steps)).cpu()


def save_reconstructions(flow, images: torch.Tensor, batch_size: int, path: Path,
                         shown: int = 8) -> int:
    """Encode and decode ``images`` ``(N, C, H, W)``; save the first ``shown`` above their
    reconstructions at ``path``; return the largest pixel error (0 for an exact flow)."""
    restored = reconstruct(flow, images, batch_size)
    shown = min(shown, len(images))
    save_grid(torch.cat([images[:shown], restored[:shown]]), flow.num_levels, path, nrow=shown)
    return int((restored.int() - images.int()).abs().max().item())


def save_interpolations(flow, images: torch.Tensor, rows: int, steps: int, path: Path) -> None:
    """``rows`` latent slerps of ``steps`` images each, row ``r`` from ``images[2r]`` to
    ``images[2r + 1]``, saved as one grid at ``path``."""
    grid = [interpolate(flow, images[2 * row], images[2 * row + 1], steps) for row in range(rows)]
    save_grid(torch.cat(grid), flow.num_levels, path, nrow=steps)
