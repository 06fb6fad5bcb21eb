"""RowWise: one flow layer on every row, shared weights and an optional position context."""

import pytest
import torch

from flowcheck import assert_invertible, assert_logdet_matches_jacobian, perturb
from mixerflow.transforms.flow_layer import flow_layer
from mixerflow.transforms.rowwise import RowWise
from support import coupling_spec as spec


@pytest.mark.parametrize("context_features", [0, 2])
def test_rowwise_applies_one_transform_to_every_row(context_features):
    step = perturb(flow_layer(5, spec("affine", context_features), coupling_layers=2)).eval()
    rowwise = perturb(RowWise(step, num_rows=3, context_features=context_features), seed=1)
    inputs = torch.randn(2, 3, 5)
    outputs, logdet = rowwise(inputs)
    for r in range(3):
        context = None
        if context_features:
            context = rowwise.position[r].expand(2, -1)
        row_out, row_logdet = step(inputs[:, r], context)
        assert torch.allclose(outputs[:, r], row_out, atol=1e-6)
    assert_invertible(rowwise, inputs)
    assert_logdet_matches_jacobian(rowwise, inputs)
