"""ImageFlow: preprocessing (dequantize + logit) + an image transform + a standard normal."""

import dataclasses
import math

import torch
from nflows.distributions.normal import StandardNormal
from nflows.transforms.base import CompositeTransform, Transform
from torch import nn

from mixerflow.errors import UserError
from mixerflow.models.glow import Glow
from mixerflow.models.mixerflow import MixerFlow
from mixerflow.models.tarflow import TarFlow
from mixerflow.preprocess import Logit, ScaleToUnit, bits_per_dim, dequantize
from mixerflow.transforms.patches import PermutePixels


class ImageFlow(nn.Module):
    """A normalizing flow on integer images ``(B, C, H, W)`` with ``num_levels`` levels.

    ``transform`` maps logit-space images ``(B, C, H, W)`` to latents of the same
    shape (nflows direction: data -> noise).
    """

    def __init__(
        self,
        transform: Transform,
        image_shape: tuple[int, int, int],
        num_levels: int,
        alpha: float = 0.05,
        permute_pixels: int | None = None,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.num_levels = num_levels
        steps = [ScaleToUnit(num_levels), Logit(alpha)]
        if permute_pixels is not None:  # the model sees permuted images; samples come back
            steps.append(PermutePixels(self.image_shape, permute_pixels))  # un-permuted
        self.preprocess = CompositeTransform(steps)
        self.transform = transform
        self.base = StandardNormal(self.image_shape)

    @property
    def num_dims(self) -> int:
        return math.prod(self.image_shape)

    def log_prob(
        self,
        images: torch.Tensor,
        noise: str = "uniform",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Lower bound on ``log P(images)`` in nats, shape ``(B,)``."""
        return self.log_density(dequantize(images, noise, generator))

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
        """The training objective: bits/dim of each image under uniform dequantization."""
        return self.bpd(images)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Integer images -> latents ``(B, C, H, W)`` (mid-point dequantization, deterministic)."""
        y, _ = self.preprocess(dequantize(images, "midpoint"))
        return self.transform(y)[0]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, layer: str = "z", pool: str = "none") -> torch.Tensor:
        """Integer images -> features ``(B, F)``, deterministic (mid-point dequantization).

        ``layer``: ``"z"`` (the latent), ``"block:k"`` (MixerFlow, TarFlow) or ``"level:l"``
        (Glow); ``pool``: ``none | mean_patches | mean_channels`` (MixerFlow, TarFlow),
        ``none | per_level`` (Glow). See the transforms' ``embed`` for the shapes.
        """
        y, _ = self.preprocess(dequantize(images, "midpoint"))
        return self.transform.embed(y, layer, pool)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, C, H, W)`` -> uint8 images with values in ``{0, …, K-1}``."""
        y, _ = self.transform.inverse(latents)
        values, _ = self.preprocess.inverse(y)
        return values.floor().clamp(0, self.num_levels - 1).to(torch.uint8)

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


TRANSFORMS = {"mixerflow": MixerFlow, "glow": Glow, "tarflow": TarFlow}  # by model.kind


def build_model(model_cfg, image_shape: tuple[int, int, int], num_levels: int,
                permute_pixels: int | None = None) -> ImageFlow:
    """Build the ImageFlow that ``model_cfg`` (a :class:`~mixerflow.config.ModelConfig`) names;
    ``permute_pixels``: the seed of a fixed pixel permutation (``data.permute_pixels``)."""
    transform = TRANSFORMS[model_cfg.kind].from_config(model_cfg, image_shape)
    return ImageFlow(transform, image_shape, num_levels, alpha=model_cfg.alpha,
                     permute_pixels=permute_pixels)


def match_width(model_cfg, image_shape: tuple[int, int, int], num_params: int):
    """A copy of ``model_cfg`` whose width (its kind's ``with_width`` knob) gives the parameter
    count closest to ``num_params``; depth and structure unchanged."""

    def params(knob: int) -> int:
        return count_parameters(TRANSFORMS[model_cfg.kind].from_config(
            model_cfg.with_width(knob), image_shape))

    if params(1) > num_params:
        raise UserError(
            f"even the narrowest {model_cfg.kind} has more than {num_params:,} parameters; "
            f"lower model.{model_cfg.REPEATED} or the depth"
        )
    low, high = 1, 2  # params(low) <= target; grow high until params(high) > target
    while params(high) <= num_params:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if params(middle) <= num_params else (low, middle)
    return model_cfg.with_width(min((low, high), key=lambda knob: abs(params(knob) - num_params)))


TRAINING_BYTES_PER_PARAMETER = 16  # float32 weight, gradient and Adam's two moments


def estimate_parameters(model_cfg, image_shape: tuple[int, int, int]) -> int:
    """The parameter count of the model ``model_cfg`` describes, from a build with one of its
    repeated blocks (``model_cfg.REPEATED``: blocks, or Glow's steps per level), so an absurd
    size costs nothing to find. The global random state is left as it was (the real model's
    initialisation must not move)."""
    with torch.random.fork_rng(devices=[]):
        one = dataclasses.replace(model_cfg, **{model_cfg.REPEATED: 1})
        one_params = count_parameters(TRANSFORMS[model_cfg.kind].from_config(one, image_shape))
        return one_params * getattr(model_cfg, model_cfg.REPEATED)


def available_bytes(device: torch.device) -> int:
    """Free memory for training on ``device``: the GPU's free memory, or the host's
    ``MemAvailable`` (Linux; unbounded where it cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**63


def check_model_fits(model_cfg, image_shape: tuple[int, int, int], device: torch.device) -> None:
    """A UserError, before anything is built, when the weights, gradients and Adam state of
    the model alone would not fit in the device's free memory."""
    params = estimate_parameters(model_cfg, image_shape)
    needed, free = params * TRAINING_BYTES_PER_PARAMETER, available_bytes(device)
    if needed > free:
        raise UserError(
            f"the model has about {params:,} parameters: training needs at least "
            f"{needed / 2**30:.1f} GiB for weights, gradients and Adam state, and {device} has "
            f"{free / 2**30:.1f} GiB free; lower model.{model_cfg.REPEATED} or the widths"
        )
