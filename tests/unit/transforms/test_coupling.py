"""Couplings of every kind: invertible, exact log-det, the identity when fresh."""

import pytest
import torch

from flowcheck import assert_logdet_matches_jacobian, perturb
from mixerflow.transforms.coupling import COUPLINGS, coupling_layer
from support import coupling_spec as spec


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
