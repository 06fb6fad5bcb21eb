"""The KAN layer: its basis is the cubic B-spline basis, its output the sum of its edge
functions (a KAN MixerFlow's checks are in test_mixerflow.py)."""

import numpy as np
import torch
from scipy.interpolate import BSpline

from mixerflow.nn.kan import SPLINE_ORDER, KANConditioner, KANLayer


def test_the_basis_is_scipys_cubic_b_splines_and_sums_to_one_on_the_grid():
    layer = KANLayer(2, 3, grid_size=4, bound=2.0)
    x = torch.linspace(-3.5, 3.5, 141, dtype=torch.float64)
    basis = layer.double().basis(x[:, None])[:, 0]  # (141, 4 + 3)
    knots = layer.knots.double().numpy()
    for k in range(basis.shape[1]):
        reference = BSpline.basis_element(knots[k : k + SPLINE_ORDER + 2], extrapolate=False)
        expected = np.nan_to_num(reference(x.numpy()))
        assert np.allclose(basis[:, k].numpy(), expected, atol=1e-12), k
    inside = (x >= -2) & (x < 2)
    assert torch.allclose(basis[inside].sum(dim=1), torch.ones(int(inside.sum()),
                                                               dtype=torch.float64))


def test_the_output_is_the_sum_of_one_function_per_edge():
    torch.manual_seed(0)
    layer = KANLayer(3, 2, grid_size=5)
    x = torch.randn(4, 3)
    basis = layer.basis(x)  # (4, 3, 8)
    coefficients = layer.spline_weight.reshape(2, 3, 8)
    expected = torch.stack([
        layer.bias[j] + sum(layer.base_weight[j, i] * torch.nn.functional.silu(x[:, i])
                            + basis[:, i] @ coefficients[j, i] for i in range(3))
        for j in range(2)], dim=1)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_a_fresh_conditioner_outputs_zero_and_broadcasts_its_context():
    net = KANConditioner(4, 6, hidden_features=8, context_features=2)
    rows, positions = torch.randn(5, 3, 4), torch.randn(3, 2)
    assert torch.equal(net(rows, positions), torch.zeros(5, 3, 6))
    torch.nn.init.normal_(net.output_layer.spline_weight)
    per_row = torch.stack([net(rows[:, r], positions[r].expand(5, 2)) for r in range(3)], 1)
    assert torch.allclose(net(rows, positions), per_row, atol=1e-6)
