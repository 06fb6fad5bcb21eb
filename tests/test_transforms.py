import pytest
import torch
from nflows.transforms.base import CompositeTransform

from flowcheck import assert_invertible, assert_logdet_matches_jacobian, perturb
from mixerflow.core.errors import UserError
from mixerflow.models.glow import GlowConfig, glow_layer
from mixerflow.nn.conditioners import ConditionerSpec
from mixerflow.transforms.coupling import COUPLINGS, CouplingSpec, coupling_layer
from mixerflow.transforms.flow_layer import LINEAR_MAPS, flow_layer
from mixerflow.transforms.patches import Patchify, Shift, Transpose
from mixerflow.transforms.preprocess import Logit, ScaleToUnit
from mixerflow.transforms.rowwise import RowWise


def spec(kind: str = "affine", context_features: int = 0) -> CouplingSpec:
    """Couplings of ``kind`` with an MLP conditioner 8 wide (splines of 4 bins)."""
    return CouplingSpec(kind, num_bins=4, conditioner=ConditionerSpec(
        "mlp", hidden_features=8, context_features=context_features))


def test_patchify_cuts_row_major_patches():
    image = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    patches, logdet = Patchify((2, 4, 6), patch_size=2)(image)
    assert patches.shape == (1, 6, 8)
    # patch 4 is grid row 1, column 1: pixels rows 2-3, columns 2-3 of both channels
    assert torch.equal(patches[0, 4], image[0, :, 2:4, 2:4].reshape(-1))
    assert torch.equal(logdet, torch.zeros(1))


@pytest.mark.parametrize(
    "transform, shape",
    [
        (Patchify((3, 4, 6), 2), (2, 3, 4, 6)),
        (Shift(1), (2, 3, 4, 6)),
        (Transpose(), (2, 5, 7)),
        (ScaleToUnit(17), (2, 1, 3, 3)),
    ],
)
def test_volume_preserving_or_linear_transforms(transform, shape):
    inputs = torch.rand(shape) * 10
    assert_invertible(transform, inputs)
    assert_logdet_matches_jacobian(transform, inputs)


def test_patchify_rejects_a_patch_size_that_does_not_divide():
    with pytest.raises(UserError, match="patch_size 3 does not divide the image size 8x8"):
        Patchify((1, 8, 8), 3)


def test_logit_is_invertible_with_exact_logdet():
    inputs = torch.rand(3, 2, 2, 2)
    assert_invertible(Logit(0.05), inputs, atol=1e-5)
    assert_logdet_matches_jacobian(Logit(0.05), inputs)


@pytest.mark.parametrize("kind", COUPLINGS)
@pytest.mark.parametrize("context_features", [0, 3])
def test_coupling_invertible_and_exact(kind, context_features):
    coupling = perturb(coupling_layer(spec(kind, context_features), 6, even=True))
    inputs = torch.randn(5, 6)
    context = torch.randn(5, context_features) if context_features else None
    outputs, logdet = coupling(inputs, context)
    restored, inverse_logdet = coupling.inverse(outputs, context)
    assert torch.allclose(restored, inputs, atol=1e-5)
    assert torch.allclose(logdet, -inverse_logdet, atol=1e-5)
    assert not torch.allclose(outputs, inputs)  # perturbed: not the identity any more
    if context is None:
        assert_logdet_matches_jacobian(coupling, inputs)


@pytest.mark.parametrize("kind", COUPLINGS)
def test_fresh_coupling_is_the_identity(kind):
    coupling = coupling_layer(spec(kind), 6, even=False)
    inputs = torch.randn(4, 6)
    outputs, logdet = coupling(inputs)
    assert torch.allclose(outputs, inputs, atol=1e-5)
    assert torch.allclose(logdet, torch.zeros(4), atol=1e-5)


@pytest.mark.parametrize("linear", ["lu", "permutation"])
@pytest.mark.parametrize("kind", COUPLINGS)
def test_flow_layer_invertible_and_exact(linear, kind):
    step = flow_layer(6, spec(kind), coupling_layers=3, linear=linear)
    step.eval()  # ActNorm stays uninitialised (its data-dependent init runs in training)
    perturb(step)
    inputs = torch.randn(4, 6)
    assert_invertible(step, inputs)
    assert_logdet_matches_jacobian(step, inputs)


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


def test_composite_of_reshapes_round_trips_an_image():
    patchify = Patchify((1, 4, 4), 2)
    chain = CompositeTransform([Shift(1), patchify, Transpose()])
    assert_invertible(chain, torch.randn(2, 1, 4, 4), atol=0)


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
