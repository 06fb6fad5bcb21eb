"""Row-wise flows: one flow layer applied to every row of a ``(B, R, L)`` tensor."""

import warnings

import torch
from nflows.transforms.base import Transform
from torch import nn

from mixerflow.nn.classes import ClassEmbedding, same_guidance, unguided
from mixerflow.transforms.flow_layer import FlowLayer

# nflows' LULinear.inverse still calls torch.triangular_solve; the result is correct.
warnings.filterwarnings("ignore", message="torch.triangular_solve is deprecated")


class RowWise(Transform):
    """Apply ``transform`` to each of the ``R`` rows of ``(B, R, L)``, one set of weights.

    A :class:`FlowLayer` takes the rows as they are; any other transform gets them folded
    into the batch (``(B·R, L)``), its per-row log-dets summed back per example.

    The conditioners' context, ``context_features`` wide: with ``position`` a learned
    embedding of each row's index ``(R, ctx)``; with ``num_classes`` a learned embedding of
    the image's class ``(B, 1, ctx)`` (the transform's ``context``: labels, see
    :mod:`mixerflow.nn.classes`); with both, their sum ``(B, R, ctx)``.
    """

    def __init__(self, transform: Transform, num_rows: int, context_features: int = 0,
                 position: bool = True, num_classes: int = 0):
        super().__init__()
        self.transform = transform
        self.num_rows = num_rows
        self.position = (nn.Parameter(torch.randn(num_rows, context_features))
                         if context_features and position else None)
        self.classes = (ClassEmbedding(num_classes, context_features)
                        if context_features and num_classes else None)

    def _row_context(self, context) -> torch.Tensor | None:
        """What the conditioners see: ``(R, ctx)``, ``(B, 1, ctx)``, ``(B, R, ctx)`` or None."""
        if self.classes is None:
            return self.position
        by_class = self.classes(context)[:, None, :]
        return by_class if self.position is None else by_class + self.position

    def _fold(self, inputs: torch.Tensor, row_context: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, rows, length = inputs.shape
        if rows != self.num_rows:
            raise ValueError(f"expected {self.num_rows} rows, got {rows}")
        if row_context is not None:
            row_context = row_context.expand(batch, rows, -1).reshape(batch * rows, -1)
        return inputs.reshape(batch * rows, length), row_context

    def _unfold(self, outputs, logabsdet, shape):
        return outputs.reshape(shape), logabsdet.reshape(shape[0], shape[1]).sum(dim=1)

    def forward(self, inputs, context=None):
        row_context = self._row_context(unguided(context))
        if isinstance(self.transform, FlowLayer):  # acts on (B, R, L) rows as they are
            return self.transform(inputs, same_guidance(row_context, context))
        flat, row_context = self._fold(inputs, row_context)
        outputs, logabsdet = self.transform(flat, same_guidance(row_context, context))
        return self._unfold(outputs, logabsdet, inputs.shape)

    def inverse(self, inputs, context=None):
        row_context = self._row_context(unguided(context))
        if isinstance(self.transform, FlowLayer):
            return self.transform.inverse(inputs, same_guidance(row_context, context))
        flat, row_context = self._fold(inputs, row_context)
        outputs, logabsdet = self.transform.inverse(flat, same_guidance(row_context, context))
        return self._unfold(outputs, logabsdet, inputs.shape)
