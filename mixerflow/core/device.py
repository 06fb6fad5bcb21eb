"""Devices by name, and the memory a process or a GPU has used or has free."""

import os
import re
import resource
from pathlib import Path

import torch

from mixerflow.core.errors import UserError

DEVICES = "auto, cpu, cuda or cuda:N"


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one of :data:`DEVICES` (``cuda:N`` with N a number)."""
    return name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name) is not None


def resolve_device(name: str, source: str = "config key 'train.device'") -> torch.device:
    """``auto`` -> CUDA when present, else the CPU; a name that is not one of
    :data:`DEVICES` or a missing CUDA device is a UserError naming ``source``."""
    if not is_device_name(name):
        raise UserError(f"{source} must be {DEVICES}; got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{source} is {name!r} but no CUDA device is available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{source} is {name!r} but this machine has "
                        f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def device_label(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H100 …)`` or ``cpu (N threads)``: what a report's figures ran on."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queue (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA memory allocated on ``device``, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def current_rss_mb() -> float:
    """The process's resident memory now (Linux ``/proc``; 0 where it is unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


MAX_SEED = 2**63 - 1  # torch's generators take seeds up to 2^64 - 1; we leave room for seed + i


def require_memory(needed_bytes: int, device: torch.device, what: str, remedy: str) -> None:
    """A UserError, before the work, when ``what`` needs more than ``device``'s free memory
    (``needed_bytes`` a lower bound: if even that does not fit, nothing will)."""
    free = available_bytes(device)
    if needed_bytes > free:
        raise UserError(f"{what} needs at least {needed_bytes / 2**30:,.1f} GiB and {device} has "
                        f"{free / 2**30:,.1f} GiB free; {remedy}")


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the GPU's free memory, or the host's ``MemAvailable``
    (Linux; unbounded where it cannot be read)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**63
