"""Row-wise flows: one flow layer applied to every row of a ``(B, R, L)`` tensor."""

import warnings

import torch
from nflows.transforms.base import Transform
from torch import nn

from mixerflow.transforms.flow_layer import FlowLayer

# nflows' LULinear.inverse still calls torch.triangular_solve; the result is correct.
warnings.filterwarnings("ignore", message="torch.triangular_solve is deprecated")


class RowWise(Transform):
    """Apply ``transform`` to each of the ``R`` rows of ``(B, R, L)``, one set of weights.

    A :class:`FlowLayer` takes the rows as they are; any other transform gets them folded
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
        if isinstance(self.transform, FlowLayer):  # acts on (B, R, L) rows as they are
            return self.transform(inputs, self.position)
        flat, row_context = self._fold(inputs)
        outputs, logabsdet = self.transform(flat, row_context)
        return self._unfold(outputs, logabsdet, inputs.shape)

    def inverse(self, inputs, context=None):
        if isinstance(self.transform, FlowLayer):
            return self.transform.inverse(inputs, self.position)
        flat, row_context = self._fold(inputs)
        outputs, logabsdet = self.transform.inverse(flat, row_context)
        return self._unfold(outputs, logabsdet, inputs.shape)
