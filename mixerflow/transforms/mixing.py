"""Row-wise flows: one flow step applied to every row of a ``(B, R, L)`` tensor."""

import warnings

import torch
from nflows.transforms.base import Transform
from nflows.transforms.lu import LULinear
from nflows.transforms.normalization import ActNorm
from nflows.transforms.permutations import RandomPermutation
from torch import nn

from mixerflow.transforms.coupling import make_coupling
from mixerflow.transforms.flowstep import FlowStep

LINEAR_MAPS = ("lu", "permutation")

# nflows' LULinear.inverse still calls torch.triangular_solve; the result is correct.
warnings.filterwarnings("ignore", message="torch.triangular_solve is deprecated")


class RowWise(Transform):
    """Apply ``transform`` to each of the ``R`` rows of ``(B, R, L)``, one set of weights.

    A :class:`FlowStep` takes the rows as they are; any other transform gets them folded
    into the batch (``(B·R, L)``), its per-row log-dets summed back per example. With
    ``context_features > 0`` each row gets a learned position embedding as the coupling
    conditioners' context.
    """

    def __init__(self, transform: Transform, num_rows: int, context_features: int = 0):
        super().__init__()
        self.transform = transform
        self.num_rows = num_rows
        self.position = (
            nn.Parameter(torch.randn(num_rows, context_features)) if context_features else None
        )

    def _fold(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, rows, length = inputs.shape
        if rows != self.num_rows:
            raise ValueError(f"expected {self.num_rows} rows, got {rows}")
        context = None
        if self.position is not None:
            context = self.position.expand(batch, -1, -1).reshape(batch * rows, -1)
        return inputs.reshape(batch * rows, length), context

    def _unfold(self, outputs, logabsdet, shape):
        return outputs.reshape(shape), logabsdet.reshape(shape[0], shape[1]).sum(dim=1)

    def forward(self, inputs, context=None):
        if isinstance(self.transform, FlowStep):  # acts on (B, R, L) rows as they are
            return self.transform(inputs, self.position)
        flat, row_context = self._fold(inputs)
        outputs, logabsdet = self.transform(flat, row_context)
        return self._unfold(outputs, logabsdet, inputs.shape)

    def inverse(self, inputs, context=None):
        if isinstance(self.transform, FlowStep):
            return self.transform.inverse(inputs, self.position)
        flat, row_context = self._fold(inputs)
        outputs, logabsdet = self.transform.inverse(flat, row_context)
        return self._unfold(outputs, logabsdet, inputs.shape)


def linear_map(features: int, linear: str) -> LULinear | RandomPermutation:
    """The step's linear map over ``features``: ``lu`` (learned, identity at start) or
    ``permutation`` (fixed, random)."""
    if linear == "lu":
        return LULinear(features, identity_init=True)
    if linear == "permutation":
        return RandomPermutation(features)
    raise ValueError(f"unknown linear map {linear!r}; choose one of {', '.join(LINEAR_MAPS)}")


def flow_step(
    features: int,
    *,
    coupling: str,
    coupling_layers: int,
    hidden_features: int,
    hidden_layers: int = 2,
    linear: str = "lu",
    context_features: int = 0,
    num_bins: int = 8,
    tail_bound: float = 4.0,
    conditioner: str = "mlp",
    kan_grid: int = 5,
) -> FlowStep:
    """ActNorm -> LU linear map (or fixed permutation) -> ``coupling_layers`` complementary
    couplings.

    Acts on the last dimension of ``(..., features)`` (e.g. ``(N, features)`` or rows
    ``(B, R, features)``).
    """
    mixer = linear_map(features, linear)  # drawn before the couplings (a permutation's seed)
    layers = [
        make_coupling(
            coupling,
            features,
            even=i % 2 == 0,
            hidden_features=hidden_features,
            hidden_layers=hidden_layers,
            context_features=context_features,
            num_bins=num_bins,
            tail_bound=tail_bound,
            conditioner=conditioner,
            kan_grid=kan_grid,
        )
        for i in range(coupling_layers)
    ]
    return FlowStep(ActNorm(features), mixer, layers)
