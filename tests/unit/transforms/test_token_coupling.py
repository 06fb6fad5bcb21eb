"""Jet's coupling on patches: exact inverse and log-det, the identity when fresh, and the
kept half passing unchanged while conditioning the other."""

import pytest
import torch

from flowcheck import assert_invertible, assert_logdet_matches_jacobian, perturb
from mixerflow.nn.token_net import TokenNet
from mixerflow.transforms.token_coupling import TokenCoupling

PATCHES, FEATURES = 6, 5  # (B, 6, 5): three patches kept, or two values of each


def coupling(axis: str, mixing: str = "attention") -> TokenCoupling:
    if axis == "spatial":
        order, kept, tokens, net_in, net_out = torch.tensor([4, 0, 2, 5, 1, 3]), 3, 3, 5, 5
    else:
        order, kept, tokens, net_in, net_out = torch.tensor([3, 1, 4, 0, 2]), 2, 6, 2, 3
    net = TokenNet(net_in, 2 * net_out, tokens, width=8, depth=1, heads=2, mlp_width=16,
                   mixing=mixing)
    return TokenCoupling(axis, order, kept, net)


@pytest.mark.parametrize("mixing", ["attention", "mlp"])
@pytest.mark.parametrize("axis", ["channels", "spatial"])
def test_token_coupling_invertible_with_exact_logdet(axis, mixing):
    layer = perturb(coupling(axis, mixing), scale=0.3)
    inputs = torch.randn(4, PATCHES, FEATURES)
    assert_invertible(layer, inputs, atol=1e-5)
    assert not torch.allclose(layer(inputs)[0], inputs)
    assert_logdet_matches_jacobian(layer, inputs[:2])


@pytest.mark.parametrize("axis", ["channels", "spatial"])
def test_a_fresh_token_coupling_is_the_identity(axis):
    inputs = torch.randn(3, PATCHES, FEATURES)
    outputs, logdet = coupling(axis)(inputs)
    assert torch.equal(outputs, inputs) and torch.allclose(logdet, torch.zeros(3), atol=1e-5)


@pytest.mark.parametrize("axis, kept", [
    ("channels", (slice(None), [3, 1])), ("spatial", ([4, 0, 2], slice(None)))])
def test_the_kept_half_passes_unchanged_and_moves_the_rest(axis, kept):
    layer = perturb(coupling(axis), scale=0.3).double()
    x = torch.randn(1, PATCHES, FEATURES, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x)[0, :, :, 0]
    is_kept = torch.zeros(PATCHES, FEATURES, dtype=torch.bool)
    is_kept[kept] = True
    assert torch.equal(layer(x)[0][0][is_kept], x[0][is_kept])
    updated_from = jacobian[~is_kept]  # (updated values, patches, features)
    assert (updated_from[:, is_kept] != 0).any()  # conditioned on the kept half …
    off_diagonal = updated_from[:, ~is_kept] - torch.diag_embed(
        updated_from[:, ~is_kept].diagonal())
    assert torch.equal(off_diagonal, torch.zeros_like(off_diagonal))  # … and itself alone
