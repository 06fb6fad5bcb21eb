"""What a training step costs: the aten ops it dispatches, its FLOPs, and the device's
measured matrix-product peak that MFU divides by."""

import time

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mixerflow.core.device import synchronize
from mixerflow.training.step import OBJECTIVE_RANGE


def flops_text(flops_per_s: float) -> str:
    """``12.3 TFLOP/s`` or, below one, ``45.6 GFLOP/s``."""
    if flops_per_s >= 1e12:
        return f"{flops_per_s / 1e12:.1f} TFLOP/s"
    return f"{flops_per_s / 1e9:.1f} GFLOP/s"


# ops that only make a new view or an empty allocation: no kernel runs for them
_NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",
              "lift_fresh", "_local_scalar_dense"}


class _DispatchCounter(TorchDispatchMode):
    """Counts the aten ops dispatched below autograd (forward and backward) that run a kernel."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket.__name__ not in _NO_KERNEL:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(step, dispatched: bool = True) -> dict:
    """Ops of one call of ``step`` (a training step).

    ``aten_events``: every ``aten::`` event torch.profiler records, nested calls and views
    included; ``objective_aten_events``: the same for the forward and backward of the
    objective alone (what the step spends before the optimizer); ``dispatched``: aten ops that
    run a kernel (no views or empty allocations) as a dispatch mode sees them, the same on
    every device, so a CPU count predicts the kernel launches of a GPU step.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    aten = [event for event in prof.events() if event.name.startswith("aten::")]
    objective = [event for event in aten if _inside(event, OBJECTIVE_RANGE)]
    counts = {"aten_events": len(aten), "objective_aten_events": len(objective)}
    if dispatched:
        with _DispatchCounter() as counter:
            step()
        counts["dispatched"] = counter.count
    return counts


def _inside(event, name: str) -> bool:
    while event is not None:
        if event.name == name:
            return True
        event = event.cpu_parent
    return False


def count_flops(step) -> float:
    """Floating-point operations of one call of ``step`` (matrix products and convolutions,
    forward and backward), as ``torch.utils.flop_counter`` counts them."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def matmul_flops_per_s(device: torch.device, bf16: bool, repeats: int = 3) -> float:
    """The device's measured dense peak: FLOP/s of a large square matrix product in the
    step's precision (bf16 or float32), best of ``repeats``. The side doubles from 256
    until one product takes 0.2 s (or reaches 8192 on a GPU, 2048 on a CPU), so the
    measurement is large enough to be a peak yet bounded in time where bf16 is slow."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    largest = 8192 if device.type == "cuda" else 2048
    size, best = 256, float("inf")
    while True:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        times = []
        for _ in range(repeats + 1):  # the first call is a warm-up
            synchronize(device)
            start = time.perf_counter()
            a @ b
            synchronize(device)
            times.append(time.perf_counter() - start)
        best = min(times[1:])
        if best >= 0.2 or size >= largest:
            return 2 * size**3 / best
        size *= 2


def peak_flops_per_s(device: torch.device, bf16: bool) -> float:
    """MFU's denominator: the best measured matrix-product FLOP/s among the precisions the
    step computes in. A bf16 step keeps the flow arithmetic in float32, and on a CPU without
    bf16 arithmetic float32 products are the faster, so bf16's peak alone could be exceeded."""
    fp32 = matmul_flops_per_s(device, bf16=False)
    return max(fp32, matmul_flops_per_s(device, bf16=True)) if bf16 else fp32
