"""Mixed precision: bf16 autocast for the conditioner networks, float32 for the flow.

Under autocast only the conditioners (matrix products, GELUs) run in bf16; their outputs
are cast back with :func:`to_float32`, and the flow arithmetic (log-dets, coupling maps,
the LU / 1x1 products, preprocessing, the base density) runs inside :func:`float32_region`.
"""

import contextlib

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def uses_bf16(device: torch.device, precision: str) -> bool:
    """``bf16`` anywhere; ``auto`` on CUDA only (the CPU runs ``auto`` in float32)."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast for the conditioner networks, or nothing (float32)."""
    if not uses_bf16(device, precision):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def to_float32(outputs: torch.Tensor) -> torch.Tensor:
    """Under bf16 autocast a conditioner runs in bf16; the flow arithmetic stays float32."""
    return outputs.float() if outputs.dtype in (torch.bfloat16, torch.float16) else outputs


def float32_region(tensor: torch.Tensor):
    """Autocast switched off: matrix products inside run in float32 (the flow arithmetic)."""
    if not torch.is_autocast_enabled(tensor.device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=tensor.device.type, enabled=False)
