"""Checks every Transform must pass: inverse∘forward = identity, log-dets cancel and
equal the brute-force Jacobian's log|det|; and the devices the checks run on."""

import pytest
import torch
from torch import nn

# The CPU always; CUDA where present. ``pytest -m cuda`` runs the CUDA cases alone.
DEVICES = [
    pytest.param(torch.device("cpu"), id="cpu"),
    pytest.param(torch.device("cuda"), id="cuda", marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]),
]


def perturb(module: nn.Module, scale: float = 0.2, seed: int = 0) -> nn.Module:
    """Move every parameter off its (often identity) initialisation, so checks bite."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def assert_invertible(transform, inputs: torch.Tensor, atol: float = 1e-4,
                      context: torch.Tensor | None = None) -> None:
    """``context``: what the transform is conditioned on, one row per example (labels)."""
    outputs, logdet = transform(inputs, context)
    restored, inverse_logdet = transform.inverse(outputs, context)
    assert outputs.numel() == inputs.numel() and restored.shape == inputs.shape
    assert logdet.shape == (inputs.shape[0],)
    error = (restored - inputs).abs().max().item()
    assert error <= atol, f"inverse(forward(x)) is off by up to {error:.3g}"
    logdet_error = (logdet + inverse_logdet).abs().max().item()
    assert logdet_error <= atol * max(1.0, logdet.abs().max()), (
        f"the log-dets fail to cancel by up to {logdet_error:.3g}")


def assert_logdet_matches_jacobian(transform, inputs: torch.Tensor, rtol: float = 1e-4,
                                   context: torch.Tensor | None = None) -> None:
    """Compare ``logabsdet`` with ``log|det J|`` of the full Jacobian, one example at a time
    (each with its row of ``context``)."""
    transform = transform.double()
    inputs = inputs.double()
    _, logdet = transform(inputs, context)
    for i in range(inputs.shape[0]):
        example = inputs[i : i + 1]
        row = None if context is None else context[i : i + 1]

        def flat_forward(v, shape=example.shape, row=row):
            return transform(v.reshape(shape), row)[0].reshape(-1)

        jacobian = torch.autograd.functional.jacobian(flat_forward, example.reshape(-1))
        sign, brute = torch.linalg.slogdet(jacobian)
        assert sign != 0
        assert abs(logdet[i].item() - brute.item()) <= rtol * max(1.0, abs(brute.item()))


def assert_exact_on(device: torch.device, transform, image_shape: tuple[int, ...],
                    context: torch.Tensor | None = None) -> None:
    """Both checks above for ``transform`` moved to ``device``, on logit-scale inputs (three
    examples, with the three rows of ``context`` if given)."""
    transform.to(device)
    inputs = 2 * torch.randn(3, *image_shape, device=device)
    context = None if context is None else context.to(device)
    assert_invertible(transform, inputs, atol=1e-4, context=context)
    assert_logdet_matches_jacobian(transform, inputs[:2], rtol=1e-4,
                                   context=None if context is None else context[:2])
