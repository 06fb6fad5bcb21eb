"""Several processes through torchrun: rank, world size, local device, the main process,
and the few collectives training needs.

``python train.py`` is one process (world size 1, no process group, no collective). Under
``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) :func:`setup`
joins the group, even for ``--nproc_per_node=1`` so one GPU runs the same code as eight:
NCCL when the processes train on CUDA, gloo on the CPU. Small control
messages (the stop decision, the time budget, evaluation sums) travel on a gloo group on
the CPU, so they never wait for the GPU's queue.
"""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from mixerflow.core.device import resolve_device
from mixerflow.core.errors import UserError


@dataclass
class Distributed:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    grouped: bool = False  # in a process group (under torchrun, even with one process)
    control: object = None  # the gloo group for control messages (None: the default group)
    owns_group: bool = False  # whether setup() created the process group (teardown ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int]:
        """``(rank, world_size)``: which equal part of a global batch this process takes."""
        return self.rank, self.world_size

    def max(self, values: list[float]) -> list[float]:
        """Element-wise maximum of ``values`` over all ranks (float64, on the control group)."""
        return self._reduce(values, dist.ReduceOp.MAX)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64, on the control group)."""
        return self._reduce(values, dist.ReduceOp.SUM)

    def _reduce(self, values: list[float], op) -> list[float]:
        if not self.grouped:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=op, group=self.control)
        return tensor.tolist()

    def agree(self, stop: bool, elapsed: float) -> tuple[bool, float]:
        """The common decision after a step: stop if any rank must (a signal reached it), and
        the main rank's elapsed seconds, which drive the schedule and the time budget."""
        stop_any, main_elapsed = self.max([float(stop), elapsed if self.is_main else 0.0])
        return bool(stop_any), main_elapsed

    def first_error(self, message: str | None) -> str | None:
        """The main rank's error, else the first other rank's: every rank learns it, so a
        check that fails on one rank stops them all instead of leaving them in a collective."""
        if not self.grouped:
            return message
        messages = [None] * self.world_size
        dist.all_gather_object(messages, message, group=self.control)
        return next((m for m in messages if m is not None), None)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device_name: str, timeout_minutes: float = 10.0) -> Distributed:
    """This process's place: a single process, or a member of torchrun's process group.

    ``device_name`` is ``train.device``: under torchrun ``auto`` and ``cuda`` give each
    process ``cuda:LOCAL_RANK`` (NCCL), ``cpu`` gives gloo processes on the CPU. A collective
    that waits longer than ``timeout_minutes`` (a rank died) fails instead of hanging.
    """
    if not launched_by_torchrun():
        return Distributed(device=resolve_device(device_name))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_name.startswith("cuda:"):
        raise UserError(f"config key 'train.device' is {device_name!r}, but under torchrun each "
                        "process takes cuda:LOCAL_RANK; use auto, cuda or cpu")
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {local_rank} has no GPU: this machine has "
                            f"{torch.cuda.device_count()}; lower --nproc_per_node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    timeout = timedelta(minutes=timeout_minutes)
    if owns_group:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timeout,
                                device_id=device if device.type == "cuda" else None)
    control = dist.new_group(backend="gloo", timeout=timeout) \
        if dist.get_backend() != "gloo" else None
    return Distributed(rank, world_size, local_rank, device, True, control, owns_group)


PEER_FAILURES = ("gloo", "NCCL", "Connection reset", "Connection closed", "timed out")


def lost_a_peer(world: Distributed, err: BaseException) -> bool:
    """Whether ``err`` is a collective that failed because another process died or the
    network broke (gloo raises plain RuntimeErrors that name it)."""
    if not world.grouped or not isinstance(err, RuntimeError):
        return False
    return isinstance(err, dist.DistError) or any(word in str(err) for word in PEER_FAILURES)


def teardown(world: Distributed) -> None:
    """Leave the process group that :func:`setup` joined (nothing for a single process)."""
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()
