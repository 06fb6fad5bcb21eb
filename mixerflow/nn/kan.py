"""Kolmogorov–Arnold network (KAN) layers as coupling conditioners (Liu et al., 2024).

A KAN layer puts a learnable univariate function on every edge ``i -> j`` and sums them:
``y_j = b_j + sum_i (w_ij silu(x_i) + sum_k c_ijk B_k(x_i))``, with ``B_k`` the cubic
B-splines on a uniform grid over ``[-bound, bound]`` (outside it only the silu term acts).
"""

import torch
from torch import nn
from torch.nn import functional as F

from mixerflow.nn.precision import to_float32

SPLINE_ORDER = 3  # cubic


class KANLayer(nn.Module):
    """``(..., in) -> (..., out)``: a learnable B-spline plus silu function on each edge.

    ``grid_size`` intervals over ``[-bound, bound]`` give ``grid_size + 3`` cubic basis
    functions per input. ``zero_init`` starts every edge function (and the bias) at zero.
    """

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5,
                 bound: float = 3.0, zero_init: bool = False):
        super().__init__()
        step = 2 * bound / grid_size
        knots = torch.arange(-SPLINE_ORDER, grid_size + SPLINE_ORDER + 1) * step - bound
        self.register_buffer("knots", knots, persistent=False)
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(
            torch.empty(out_features, in_features * (grid_size + SPLINE_ORDER)))
        self.bias = nn.Parameter(torch.zeros(out_features))
        if zero_init:
            nn.init.zeros_(self.base_weight)
            nn.init.zeros_(self.spline_weight)
        else:
            nn.init.kaiming_uniform_(self.base_weight, a=5**0.5)
            nn.init.normal_(self.spline_weight, std=0.1 / in_features**0.5)

    def extra_repr(self) -> str:
        basis = self.spline_weight.shape[1] // self.base_weight.shape[1]
        return (f"in_features={self.base_weight.shape[1]}, out_features={self.bias.numel()}, "
                f"basis_per_edge={basis}")

    def basis(self, inputs: torch.Tensor) -> torch.Tensor:
        """Cubic B-spline values ``(..., in, grid_size + 3)`` at ``inputs`` ``(..., in)``
        (Cox–de Boor recursion; all zero outside the grid)."""
        x, knots = inputs.unsqueeze(-1), self.knots
        values = ((x >= knots[:-1]) & (x < knots[1:])).to(inputs.dtype)
        for order in range(1, SPLINE_ORDER + 1):
            left = (x - knots[: -order - 1]) / (knots[order:-1] - knots[: -order - 1])
            right = (knots[order + 1 :] - x) / (knots[order + 1 :] - knots[1:-order])
            values = left * values[..., :-1] + right * values[..., 1:]
        return values

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        splines = self.basis(inputs).flatten(-2)
        return (F.linear(F.silu(inputs), self.base_weight, self.bias)
                + F.linear(splines, self.spline_weight))


class KANConditioner(nn.Module):
    """``(..., in) [+ context] -> (..., out)``: KAN layers, the last one zero-initialised so
    a fresh coupling is the identity. The interface of
    :class:`~mixerflow.nn.conditioners.MLPConditioner`."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int,
                 hidden_layers: int = 2, context_features: int = 0, grid_size: int = 5):
        super().__init__()
        self.hidden_features = hidden_features  # read by nflows' spline couplings
        widths = [in_features + context_features] + [hidden_features] * hidden_layers
        self.hidden = nn.Sequential(*(KANLayer(a, b, grid_size)
                                      for a, b in zip(widths[:-1], widths[1:], strict=True)))
        self.output_layer = KANLayer(widths[-1], out_features, grid_size, zero_init=True)

    def forward(self, inputs: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is not None:  # a (R, ctx) position table broadcasts against (B, R, in)
            context = context.expand(*inputs.shape[:-1], context.shape[-1])
            inputs = torch.cat([inputs, context], dim=-1)
        return to_float32(self.output_layer(self.hidden(inputs)))
