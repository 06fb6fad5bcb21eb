"""ImageFlow: dequantization (uniform or learned) + logit + an image transform + a standard
normal."""

import math
import sys

import torch
from nflows.distributions.normal import StandardNormal
from nflows.transforms.base import CompositeTransform
from torch import nn

from mixerflow.core.errors import UserError
from mixerflow.models.kind import MODEL_KINDS, ImageTransform, ModelConfig
from mixerflow.transforms.dequantization import VariationalDequantizer
from mixerflow.transforms.patches import PermutePixels
from mixerflow.transforms.preprocess import (
    Logit,
    ScaleToUnit,
    bits_per_dim,
    dequantize,
    uniform_noise,
)


class ImageFlow(nn.Module):
    """A normalizing flow on integer images ``(B, C, H, W)`` with ``num_levels`` levels.

    ``transform`` maps logit-space images ``(B, C, H, W)`` to latents of the same
    shape (nflows direction: data -> noise). ``dequantizer``: a learned ``q(u | x)``
    (:class:`VariationalDequantizer`) in place of uniform noise, or None.
    """

    def __init__(
        self,
        transform: ImageTransform,
        image_shape: tuple[int, int, int],
        num_levels: int,
        alpha: float = 0.05,
        permute_pixels: int | None = None,
        dequantizer: VariationalDequantizer | None = None,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_levels = num_levels
        parts = [ScaleToUnit(num_levels), Logit(alpha)]
        if permute_pixels is not None:  # the model sees permuted images; samples come back
            parts.append(PermutePixels(self.image_shape, permute_pixels))  # un-permuted
        self.preprocess = CompositeTransform(parts)
        self.transform = transform
        self.base = StandardNormal(self.image_shape)
        self.dequantizer = dequantizer

    @property
    def num_dims(self) -> int:
        return math.prod(self.image_shape)

    def require_images(self, image_shape: tuple[int, ...], num_levels: int, data: str) -> None:
        """Refuse data (named ``data``) whose images are not of the shape and number of levels
        this flow was built for: its bits/dim or samples would be meaningless."""
        if (tuple(image_shape), num_levels) != (self.image_shape, self.num_levels):
            raise UserError(f"the model takes {self.image_shape} images of {self.num_levels} "
                            f"levels but {data} gives {tuple(image_shape)} images of "
                            f"{num_levels} levels (did the data change since training?)")

    def log_prob(
        self,
        images: torch.Tensor,
        noise: str = "uniform",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Lower bound on ``log P(images)`` in nats, shape ``(B,)`` (``noise="midpoint"``: the
        density at the bins' centres, no bound)."""
        if noise == "uniform":
            return self.log_bound(images, uniform_noise(images, generator))
        return self.log_density(dequantize(images, noise, generator))

    def log_bound(self, images: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
        """``log p(x + u) - log q(u | x)`` in nats, ``(B,)``, for integer ``images (B, C, H, W)``
        and the uniform draw ``u0`` of their shape: ``u = u0`` (``q`` uniform, ``log q = 0``)
        or the dequantizer's map of it. Its mean over ``u0`` is the bound the flow trains on.
        """
        if self.dequantizer is None:
            return self.log_density(images.float() + u0)
        values, log_q = self.dequantizer(images, u0)
        return self.log_density(values) - log_q

    def log_density(self, values: torch.Tensor) -> torch.Tensor:
        """``log p(v)`` in nats of dequantized images ``v = x + u`` in ``[0, K)^D``, ``(B,)``.

        With ``u ~ U[0,1)^D`` its mean is the lower bound on ``log P(x)`` (the objective).
        """
        y, logdet_pre = self.preprocess(values)
        z, logdet_flow = self.transform(y)
        return self.base.log_prob(z) + logdet_pre + logdet_flow

    def bpd(
        self,
        images: torch.Tensor,
        noise: str = "uniform",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Bits per dimension of each image, shape ``(B,)``."""
        return bits_per_dim(self.log_prob(images, noise, generator), self.num_dims)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The training objective: bits/dim of each image (the bound on fresh noise)."""
        return self.bpd(images)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Integer images -> latents ``(B, C, H, W)`` (mid-point dequantization, deterministic)."""
        y, _ = self.preprocess(dequantize(images, "midpoint"))
        return self.transform(y)[0]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, layer: str = "z", pool: str = "none") -> torch.Tensor:
        """Integer images -> features ``(B, F)``, deterministic (mid-point dequantization).

        ``layer`` and ``pool``: what the transform's ``LAYERS`` and ``POOLS`` name (``"z"``,
        the latent, always). See the transforms' ``embed`` for the shapes.
        """
        y, _ = self.preprocess(dequantize(images, "midpoint"))
        return self.transform.embed(y, layer, pool)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, C, H, W)`` -> uint8 images with values in ``{0, …, K-1}``."""
        y, _ = self.transform.inverse(latents)
        values, _ = self.preprocess.inverse(y)
        broken = int((~torch.isfinite(values.flatten(1)).all(1)).sum())
        if broken:  # NaN would turn into pixel 0 unseen: black images and no word of why
            print(f"warning: {broken} of {len(values)} decoded images hold non-finite values "
                  "(the inverse overflowed); those pixels read 0", file=sys.stderr)
        return values.nan_to_num(0.0).floor().clamp(0, self.num_levels - 1).to(torch.uint8)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``num_samples`` uint8 images ``(N, C, H, W)`` from the base scaled by ``temperature``."""
        shape = (num_samples, *self.image_shape)
        latents = torch.randn(shape, generator=generator) * temperature
        device = next(self.parameters()).device
        return self.decode(latents.to(device))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_transform(model_cfg: ModelConfig, image_shape: tuple[int, int, int]) -> ImageTransform:
    """The transform of the kind ``model_cfg.kind`` names, for images of ``image_shape``."""
    return MODEL_KINDS[model_cfg.kind].transform.from_config(model_cfg, image_shape)


def build_model(model_cfg: ModelConfig, image_shape: tuple[int, int, int], num_levels: int,
                permute_pixels: int | None = None) -> ImageFlow:
    """The ImageFlow that ``model_cfg`` describes; ``permute_pixels``: the seed of a fixed
    pixel permutation (``data.permute_pixels``)."""
    dequantizer = None
    if model_cfg.dequantization == "variational":
        dequantizer = VariationalDequantizer(image_shape, num_levels, model_cfg.dequant_hidden,
                                             model_cfg.dequant_steps)
    return ImageFlow(build_transform(model_cfg, image_shape), image_shape, num_levels,
                     alpha=model_cfg.alpha, permute_pixels=permute_pixels,
                     dequantizer=dequantizer)
