"""FlowLayer: invertible, exact, equal to nflows' composite of its own modules, ActNorm's init."""

import pytest
import torch
from nflows.transforms.base import CompositeTransform

from flowcheck import assert_invertible, assert_logdet_matches_jacobian, perturb
from mixerflow.models.glow import GlowConfig, glow_layer
from mixerflow.transforms.coupling import COUPLINGS
from mixerflow.transforms.flow_layer import LINEAR_MAPS, flow_layer
from support import coupling_spec as spec


@pytest.mark.parametrize("linear", ["lu", "permutation"])
@pytest.mark.parametrize("kind", COUPLINGS)
def test_flow_layer_invertible_and_exact(linear, kind):
    step = flow_layer(6, spec(kind), coupling_layers=3, linear=linear)
    step.eval()  # ActNorm stays uninitialised (its data-dependent init runs in training)
    perturb(step)
    inputs = torch.randn(4, 6)
    assert_invertible(step, inputs)
    assert_logdet_matches_jacobian(step, inputs)


@pytest.mark.parametrize("linear", LINEAR_MAPS)
@pytest.mark.parametrize("kind", COUPLINGS)
@pytest.mark.parametrize("features", [6, 7])  # equal halves (an interleave) and unequal ones
def test_fused_layer_equals_the_nflows_composite_of_its_modules(kind, linear, features):
    step = perturb(flow_layer(features, spec(kind, 2), coupling_layers=3, linear=linear)).eval()
    inputs, context = torch.randn(5, features), torch.randn(5, 2)
    outputs, logdet = step(inputs, context)
    expected, expected_logdet = CompositeTransform.forward(step, inputs, context)
    assert torch.allclose(outputs, expected, atol=1e-5)
    assert torch.allclose(logdet, expected_logdet, atol=1e-5)


@pytest.mark.parametrize("kind", COUPLINGS)
@pytest.mark.parametrize("even", [True, False])
def test_fused_glow_layer_equals_the_nflows_composite_of_its_modules(kind, even):
    glow = GlowConfig(coupling=kind, num_bins=4, hidden_channels=8)
    step = perturb(glow_layer(6, even, glow.coupling_spec())).eval()
    inputs = torch.randn(2, 6, 4, 4)
    outputs, logdet = step(inputs)
    expected, expected_logdet = CompositeTransform.forward(step, inputs)
    assert torch.allclose(outputs, expected, atol=1e-5)
    assert torch.allclose(logdet, expected_logdet, atol=1e-5)
    assert_invertible(step, inputs)
    assert_logdet_matches_jacobian(step, inputs[:1])


def test_fused_rows_equal_the_step_on_each_row_with_its_context():
    """(B, R, L) rows with an (R, ctx) context broadcast: the same as (N, L) row by row."""
    step = perturb(flow_layer(5, spec("affine", 3), coupling_layers=2)).eval()
    rows, table = torch.randn(2, 4, 5), torch.randn(4, 3)
    outputs, logdet = step(rows, table)
    flat_out, flat_logdet = step(rows.reshape(8, 5), table.repeat(2, 1))
    assert torch.allclose(outputs.reshape(8, 5), flat_out, atol=1e-6)
    assert torch.allclose(logdet, flat_logdet.reshape(2, 4).sum(1), atol=1e-5)


def test_actnorm_initialises_from_the_first_training_batch_only():
    step = flow_layer(4, spec(), coupling_layers=2)
    rows = 3 + 2 * torch.randn(64, 10, 4)
    outputs, _ = step(rows)  # training mode: ActNorm sets itself from these rows
    mixed = outputs.reshape(-1, 4)  # identity couplings and LU at init: ActNorm's output
    assert torch.allclose(mixed.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(mixed.std(0), torch.ones(4), atol=1e-3)
    scale = step.actnorm.log_scale.clone()
    step(rows * 5)
    assert torch.equal(step.actnorm.log_scale, scale)
