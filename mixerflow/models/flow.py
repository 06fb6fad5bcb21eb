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
from mixerflow.nn.classes import Guided
from mixerflow.transforms.dequantization import VariationalDequantizer
from mixerflow.transforms.patches import PermutePixels
from mixerflow.transforms.preprocess import (
    Logit,
    ScaleToUnit,
    bits_per_dim,
    dequantize,
    gaussian_noise,
    uniform_noise,
)


class ImageFlow(nn.Module):
    """A normalizing flow on integer images ``(B, C, H, W)`` with ``num_levels`` levels.

    ``transform`` maps logit-space images ``(B, C, H, W)`` to latents of the same
    shape (nflows direction: data -> noise). ``dequantizer``: a learned ``q(u | x)``
    (:class:`VariationalDequantizer`) in place of uniform noise, or None.

    ``num_classes > 0``: a class-conditional flow ``p(x | y)``, ``y`` in ``0 … K-1``; every
    density and sampling method takes ``labels (B,)``, and ``labels=None`` (or label ``K``,
    the no-class token that label dropping trains) is the model's unconditional density.

    ``noise_std = σ > 0``: the flow models noisy images instead of dequantized ones (TarFlow's
    recipe): ``N(0, σ²)`` noise added to the bins' centres on the logit scale, its densities
    those of such noisy images in pixel units (not a bound on the discrete likelihood), and
    samples optionally denoised by one score step (:meth:`denoise`).
    """

    def __init__(
        self,
        transform: ImageTransform,
        image_shape: tuple[int, int, int],
        num_levels: int,
        alpha: float = 0.05,
        permute_pixels: int | None = None,
        dequantizer: VariationalDequantizer | None = None,
        num_classes: int = 0,
        noise_std: float = 0.0,
    ):
        super().__init__()
        self.noise_std = noise_std
        self.image_shape = tuple(image_shape)
        self.num_levels = num_levels
        self.num_classes = num_classes
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

    def bpd_meaning(self) -> str:
        """What this flow's bits/dim are of, where that is not the discrete bound on the
        images: words to follow "bits/dim" in every report ("" for the plain figure)."""
        parts = []
        if self.noise_std:
            parts.append(f"of the images with N(0, {self.noise_std:g}²) logit-scale noise (a "
                         "density of noisy images, not comparable with the discrete bound)")
        if self.num_classes:
            parts.append("given each image's class")
        return " ".join(parts)

    def require_images(self, image_shape: tuple[int, ...], num_levels: int, data: str) -> None:
        """Refuse data (named ``data``) whose images are not of the shape and number of levels
        this flow was built for: its bits/dim or samples would be meaningless."""
        if (tuple(image_shape), num_levels) != (self.image_shape, self.num_levels):
            raise UserError(f"the model takes {self.image_shape} images of {self.num_levels} "
                            f"levels but {data} gives {tuple(image_shape)} images of "
                            f"{num_levels} levels (did the data change since training?)")

    def class_context(self, labels: torch.Tensor | None, count: int,
                      guidance: float | None = None):
        """The transform's context for ``count`` images: None for an unconditional flow;
        else ``labels`` (None: the no-class token for all) as int64 on the flow's device, or
        with ``guidance`` a :class:`Guided` context for a doubled batch (labels, then the
        no-class token)."""
        if not self.num_classes:
            if labels is not None or guidance is not None:
                raise ValueError("this flow is unconditional: it takes no labels or guidance")
            return None
        device = next(self.parameters()).device
        if labels is None:
            labels = torch.full((count,), self.num_classes, dtype=torch.long, device=device)
        labels = labels.to(device=device, dtype=torch.long)
        if guidance is None:
            return labels
        return Guided(torch.cat([labels, torch.full_like(labels, self.num_classes)]), guidance)

    def log_prob(
        self,
        images: torch.Tensor,
        noise: str = "uniform",
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Lower bound on ``log P(images [| labels])`` in nats, shape ``(B,)``, on a fresh draw
        of the noise (``noise="midpoint"``: the density at the bins' centres, no bound; a
        ``noise_std`` flow: the density of the images with fresh Gaussian noise)."""
        if noise == "uniform":
            return self.log_bound(images, self.draw_noise(images, generator), labels)
        return self.log_density(dequantize(images, noise, generator), labels)

    def draw_noise(self, images: torch.Tensor, generator: torch.Generator | None = None,
                   part: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """The draw :meth:`log_bound` takes for ``images``: uniform ``u0``, or standard normal
        ``ε`` for a ``noise_std`` flow (``part``: see
        :func:`~mixerflow.transforms.preprocess.uniform_noise`)."""
        draw = gaussian_noise if self.noise_std else uniform_noise
        return draw(images, generator, part)

    def log_bound(self, images: torch.Tensor, u0: torch.Tensor,
                  labels: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x + u [| y]) - log q(u | x)`` in nats, ``(B,)``, for integer ``images (B, C,
        H, W)`` and the uniform draw ``u0`` of their shape: ``u = u0`` (``q`` uniform,
        ``log q = 0``) or the dequantizer's map of it. Its mean over ``u0`` is the bound the
        flow trains on. A ``noise_std`` flow takes a standard normal ``u0`` and gives the
        density of the noisy images :meth:`noisy` makes (its objective, no bound).
        """
        if self.noise_std:
            return self.log_density(self.noisy(images, u0), labels)
        if self.dequantizer is None:
            return self.log_density(images.float() + u0, labels)
        values, log_q = self.dequantizer(images, u0)
        return self.log_density(values, labels) - log_q

    def noisy(self, images: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Integer ``images (B, C, H, W)`` at their bins' centres moved by ``noise_std · eps``
        on the logit scale, back in pixel units: values in the logit's domain, ``[0, K)``
        widened by the margin ``α·K / (1 - 2α)`` on either side."""
        y, _ = self.preprocess(dequantize(images, "midpoint"))
        return self.preprocess.inverse(y + self.noise_std * eps)[0]

    def log_density(self, values: torch.Tensor, labels: torch.Tensor | None = None
                    ) -> torch.Tensor:
        """``log p(v [| y])`` in nats of dequantized images ``v = x + u`` in ``[0, K)^D``,
        ``(B,)``.

        With ``u ~ U[0,1)^D`` its mean is the lower bound on ``log P(x)`` (the objective).
        """
        y, logdet_pre = self.preprocess(values)
        z, logdet_flow = self.transform(y, self.class_context(labels, len(values)))
        return self.base.log_prob(z) + logdet_pre + logdet_flow

    def bpd(
        self,
        images: torch.Tensor,
        noise: str = "uniform",
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bits per dimension of each image, shape ``(B,)``."""
        return bits_per_dim(self.log_prob(images, noise, generator, labels), self.num_dims)

    @torch.no_grad()
    def class_log_probs(self, images: torch.Tensor, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
        """``log P(images | y)`` bounds in nats for every class ``y``, ``(B, K)``, all on one
        draw of the dequantization noise (so classes are compared on equal terms)."""
        if not self.num_classes:
            raise ValueError("this flow is unconditional: it has no classes")
        u0 = self.draw_noise(images, generator)
        columns = [self.log_bound(images, u0, torch.full((len(images),), label))
                   for label in range(self.num_classes)]
        return torch.stack(columns, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The training objective: bits/dim of each image (the bound on fresh noise)."""
        return self.bpd(images)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Integer images -> latents ``(B, C, H, W)`` (mid-point dequantization, deterministic)."""
        y, _ = self.preprocess(dequantize(images, "midpoint"))
        return self.transform(y, self.class_context(None, len(images)))[0]

    @torch.no_grad()
    def embed(self, images: torch.Tensor, layer: str = "z", pool: str = "none") -> torch.Tensor:
        """Integer images -> features ``(B, F)``, deterministic (mid-point dequantization).

        ``layer`` and ``pool``: what the transform's ``LAYERS`` and ``POOLS`` name (``"z"``,
        the latent, always). See the transforms' ``embed`` for the shapes. A
        class-conditional flow embeds with the no-class token: features that do not use the
        label, for probes that predict it.
        """
        y, _ = self.preprocess(dequantize(images, "midpoint"))
        context = self.class_context(None, len(images))
        if context is None:
            return self.transform.embed(y, layer, pool)
        return self.transform.embed(y, layer, pool, context)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, labels: torch.Tensor | None = None,
               guidance: float | None = None, denoise: bool = False) -> torch.Tensor:
        """Latents ``(B, C, H, W)`` -> uint8 images with values in ``{0, …, K-1}``
        (class-conditional: of class ``labels``, None for no class; ``guidance`` ``W``: the
        conditioners' outputs pushed ``W`` times their gap from the no-class pass's;
        ``denoise``: a ``noise_std`` flow's samples denoised first, :meth:`denoise`)."""
        context = self.class_context(labels, len(latents), guidance)
        if guidance is not None:
            latents = torch.cat([latents, latents])
        y, _ = self.transform.inverse(latents, context)
        if guidance is not None:
            y = y[: len(y) // 2]
        if denoise:
            y = self.denoise(y, labels)
        values, _ = self.preprocess.inverse(y)
        broken = int((~torch.isfinite(values.flatten(1)).all(1)).sum())
        if broken:  # NaN would turn into pixel 0 unseen: black images and no word of why
            print(f"warning: {broken} of {len(values)} decoded images hold non-finite values "
                  "(the inverse overflowed); those pixels read 0", file=sys.stderr)
        return values.nan_to_num(0.0).floor().clamp(0, self.num_levels - 1).to(torch.uint8)

    def denoise(self, y: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logit-space images ``y (B, C, H, W)`` (the transform's inputs) moved by one score
        step, ``y + σ² ∇_y log p(y [| labels])``: Tweedie's estimate of the clean image
        under the flow's own density, for a flow trained on ``N(0, σ²)`` noise there."""
        if not self.noise_std:
            raise ValueError("denoising needs a flow trained on noisy images "
                             "(model.dequantization: gaussian)")
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            z, logdet = self.transform(y, self.class_context(labels, len(y)))
            log_p = self.base.log_prob(z) + logdet
            score, = torch.autograd.grad(log_p.sum(), y)
        return (y + self.noise_std**2 * score).detach()

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        guidance: float | None = None,
        denoise: bool = False,
    ) -> torch.Tensor:
        """``num_samples`` uint8 images ``(N, C, H, W)`` from the base scaled by
        ``temperature``; class-conditional: of the classes ``labels (N,)`` (None: no class),
        guided by ``guidance`` (see :meth:`decode`; 0 equals None, plain conditional);
        ``denoise``: see :meth:`denoise`."""
        shape = (num_samples, *self.image_shape)
        latents = torch.randn(shape, generator=generator) * temperature
        device = next(self.parameters()).device
        return self.decode(latents.to(device), labels, guidance, denoise)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_transform(model_cfg: ModelConfig, image_shape: tuple[int, int, int],
                    num_classes: int = 0) -> ImageTransform:
    """The transform of the kind ``model_cfg.kind`` names, for images of ``image_shape``
    (class-conditional on ``num_classes`` classes where that is not 0)."""
    transform = MODEL_KINDS[model_cfg.kind].transform
    if not num_classes:
        return transform.from_config(model_cfg, image_shape)
    if not transform.CLASS_CONDITIONAL:
        raise UserError(f"model.kind {model_cfg.kind} has no class-conditional form")
    return transform.from_config(model_cfg, image_shape, num_classes=num_classes)


def build_model(model_cfg: ModelConfig, image_shape: tuple[int, int, int], num_levels: int,
                permute_pixels: int | None = None, num_classes: int = 0) -> ImageFlow:
    """The ImageFlow that ``model_cfg`` describes; ``permute_pixels``: the seed of a fixed
    pixel permutation (``data.permute_pixels``); ``num_classes``: the data's classes, which
    a class-conditional model (``model.class_conditional``) needs and no other takes."""
    if model_cfg.class_conditional != (num_classes > 0):
        raise ValueError(f"model.class_conditional is {model_cfg.class_conditional} but "
                         f"num_classes is {num_classes}")
    dequantizer = None
    if model_cfg.dequantization == "variational":
        dequantizer = VariationalDequantizer(image_shape, num_levels, model_cfg.dequant_hidden,
                                             model_cfg.dequant_steps)
    return ImageFlow(build_transform(model_cfg, image_shape, num_classes), image_shape,
                     num_levels, alpha=model_cfg.alpha, permute_pixels=permute_pixels,
                     dequantizer=dequantizer, num_classes=num_classes,
                     noise_std=model_cfg.noise_scale)
