"""The optimiser step: the one piece of code that training, ``bench`` and ``compare`` run.

A step draws the dequantization noise on the device, evaluates the mean bits/dim (the
bound, under uniform or learned dequantization) under the run's precision,
back-propagates, clips the gradient norm and takes one Adam step (a single fused kernel
where the device has one), then updates the weights' average where there is one. Nothing
in it waits for the device (but the average's update on CUDA): the loss comes back as a
device tensor, and a step with a non-finite loss or gradient is skipped and counted on the
device, so the host only synchronises when :meth:`TrainStep.health` or ``loss.item()`` is
called at logging and checkpoint steps.
"""

import inspect
import math

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.profiler import record_function

from mixerflow.data.images import ImageSet
from mixerflow.models.flow import ImageFlow
from mixerflow.nn.precision import autocast_for
from mixerflow.training.distributed import Distributed
from mixerflow.transforms.preprocess import bits_per_dim, uniform_noise

OBJECTIVE_RANGE = "mixerflow.objective"  # profiler range: the forward and backward of the loss
# DDP syncs buffers once at the start, not every forward: ours are fixed after ActNorm's init
# (the keyword was renamed in torch 2.14)
_DDP_KEYWORDS = inspect.signature(DistributedDataParallel).parameters
SYNC_BUFFERS_ONCE = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_KEYWORDS
                     else {"broadcast_buffers": False})


def make_optimizer(flow: ImageFlow, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam updating every parameter in one fused kernel (CPU and CUDA), not one per tensor."""
    return torch.optim.Adam(flow.parameters(), lr=lr, weight_decay=weight_decay, fused=True)


def make_average(flow: ImageFlow, decay: float) -> AveragedModel:
    """An exponential moving average of ``flow``'s parameters (``train.ema``): each update
    moves it ``1 - decay`` of the way to the current weights, the first one copies them.
    Buffers are copied, not averaged (ours are fixed once ActNorm is initialised). On CUDA
    an update reads its count on the host: one synchronisation a step."""
    return AveragedModel(flow, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def use_fused_adam(optimizer: torch.optim.Optimizer) -> None:
    """A loaded optimizer state carries its saver's ``fused`` flag; ours is always fused."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None


def compile_regions(flow: ImageFlow, backend: str = "inductor") -> None:
    """Regional compilation: each repeated block is compiled once, and blocks of the same
    structure reuse that code (their parameters are graph inputs, not constants).

    ``backend="aot_eager"`` captures the same graphs without generating kernels (quick
    checks of the compile path)."""
    regions = flow.transform.compile_regions()
    if flow.dequantizer is not None:
        regions.append(flow.dequantizer)
    # The regions share one forward function, and dynamo keeps at most recompile_limit (8)
    # compiled variants of a function, running the rest eagerly with only a warning. A
    # deep Glow has more: a variant per level and mask parity, and the first layer's input
    # needs no grad, each in training and in evaluation (its CIFAR-10 config ran partly
    # eager on a GPU). Room for four a region.
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), 4 * len(regions)))
    for region in regions:
        region.compile(backend=backend)


def clip_gradients(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients so their global L2 norm is at most ``max_norm``; returns the norm
    before clipping. ``clip_grad_norm_``'s arithmetic in a handful of multi-tensor calls (it
    adds a no-op ``to`` per parameter, about a thousand host-side ops a step here)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


class LogBound(nn.Module):
    """The flow's ``log_bound`` as a module's ``forward``, the call that DDP synchronises
    (the dequantizer's parameters included)."""

    def __init__(self, flow: ImageFlow):
        super().__init__()
        self.flow = flow

    def forward(self, images: torch.Tensor, u0: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow.log_bound(images, u0, labels)


def drop_labels(labels: torch.Tensor, rate: float, no_class: int, generator: torch.Generator,
                part: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """``labels (B,)`` with a share ``rate`` replaced by ``no_class``, drawn by ``generator``
    for the whole global batch of which ``labels`` are part ``part`` (one uniform draw per
    label, by :func:`~mixerflow.transforms.preprocess.uniform_noise`, as the noise)."""
    dropped = uniform_noise(labels, generator, part) < rate
    return torch.where(dropped, no_class, labels)


class TrainStep:
    """``step(images, index, lr, labels) -> loss``: one optimizer step on uint8 ``images (B,
    C, H, W)`` (and, for a class-conditional flow, their ``labels (B,)``, a share
    ``label_drop`` of them replaced by the no-class token).

    ``loss`` is the batch's mean bits/dim as a 0-dim device tensor (not synchronised).
    ``grad_norm`` holds the last step's gradient norm before clipping. With ``ema`` (a
    decay), ``average`` is the moving average of the weights, updated after every step.

    With ``world`` in a process group (torchrun), ``images`` are this rank's part of the
    global batch, the flow runs under DistributedDataParallel (gradients averaged over the
    ranks, so equal to the global batch's gradient) and the noise is this rank's part of the
    global batch's noise: N ranks take exactly the steps of one process.
    """

    def __init__(
        self,
        flow: ImageFlow,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device,
        precision: str = "auto",
        grad_clip: float = 50.0,
        compile: bool = False,
        seed: int = 0,
        world: Distributed | None = None,
        ema: float | None = None,
        label_drop: float = 0.0,
        inject_nan: tuple[int, int] | None = None,
    ):
        self.flow, self.optimizer, self.device = flow, optimizer, device
        self.label_drop = label_drop
        self.inject_nan = inject_nan  # debugging: (every, run) -> non-finite losses
        self.precision, self.grad_clip = precision, grad_clip
        self.world = world or Distributed(device=device)
        self.parameters = [p for p in flow.parameters() if p.requires_grad]
        self.noise = torch.Generator(device=device).manual_seed(seed)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)  # since health()
        self.bad_in_a_row = torch.zeros((), dtype=torch.long, device=device)
        self.grad_norm = torch.zeros((), device=device)
        # before compiling: the average is evaluated eagerly, not traced again
        self.average = make_average(flow, ema) if ema is not None else None
        if compile:
            compile_regions(flow)
        self.density = LogBound(flow)
        if self.world.grouped:  # broadcasts rank 0's parameters (ActNorm's init included)
            self.density = DistributedDataParallel(
                self.density, device_ids=[device] if device.type == "cuda" else None,
                gradient_as_bucket_view=True, **SYNC_BUFFERS_ONCE)

    def __call__(self, images: torch.Tensor, index: int, lr: float,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        if (labels is not None) != bool(self.flow.num_classes):
            raise ValueError("a class-conditional flow trains on labels, and only it does")
        self.flow.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with record_function(OBJECTIVE_RANGE):
            u0 = self.flow.draw_noise(images, self.noise, self.world.part)
            if labels is not None and self.label_drop:
                labels = drop_labels(labels, self.label_drop, self.flow.num_classes,
                                     self.noise, self.world.part)
            with autocast_for(self.device, self.precision):
                log_bound = self.density(images, u0, labels)
                loss = bits_per_dim(log_bound, self.flow.num_dims).mean()
            if self.inject_nan and index % self.inject_nan[0] >= self.inject_nan[0] - \
                    self.inject_nan[1]:
                loss = loss * math.nan
            loss.backward()
        self.grad_norm = clip_gradients(self.parameters, self.grad_clip)
        # a non-finite loss or gradient (DDP shares gradients: every rank agrees) skips the
        # update inside the fused Adam kernel, as AMP's GradScaler does: no host sync
        bad = ~(torch.isfinite(loss.detach()) & torch.isfinite(self.grad_norm))
        self.optimizer.found_inf = bad.float()
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.flow)
        self.skipped += bad
        self.bad_in_a_row = torch.where(bad, self.bad_in_a_row + 1, 0)
        return loss.detach()

    def health(self) -> tuple[int, int]:
        """(steps skipped for a non-finite loss since the last call, such steps in a row up to
        now), the worst over the ranks. Waits for the device; every rank must call it at the
        same step."""
        skipped, in_a_row = self.world.max([float(self.skipped), float(self.bad_in_a_row)])
        self.skipped.zero_()
        return int(skipped), int(in_a_row)

    def state_dict(self) -> dict:
        return {"noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.noise.set_state(state["noise"])


@torch.no_grad()
def initialize_actnorm(flow: ImageFlow, data: ImageSet, size: int, device) -> None:
    """ActNorm data-dependent init: one training-mode forward pass on ``size`` images (with
    their labels, for a class-conditional flow)."""
    idx = torch.randperm(len(data))[:size]
    flow.train()
    labels = data.labels[idx] if flow.num_classes else None
    flow.bpd(data.images[idx].to(device), labels=labels)
