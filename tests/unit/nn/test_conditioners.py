"""The one conditioner factory: every kind starts at zero output (a fresh coupling is the
identity), returns float32 under autocast, and takes a context that broadcasts."""

import pytest
import torch

from mixerflow.nn.conditioners import ConditionerSpec, make_conditioner


@pytest.mark.parametrize("kind", ["mlp", "kan"])
def test_row_conditioners_start_at_zero_and_broadcast_a_position_table(kind):
    network = make_conditioner(ConditionerSpec(kind, hidden_features=6, context_features=3), 4, 5)
    rows, table = torch.randn(2, 7, 4), torch.randn(7, 3)
    output = network(rows, table)
    assert output.shape == (2, 7, 5) and torch.equal(output, torch.zeros(2, 7, 5))
    assert network.hidden_features == 6  # nflows' spline couplings read it


def test_the_conv_conditioner_keeps_the_image_shape_and_starts_at_zero():
    network = make_conditioner(ConditionerSpec("conv", hidden_features=8), 3, 6)
    output = network(torch.randn(2, 3, 4, 4))
    assert output.shape == (2, 6, 4, 4) and torch.equal(output, torch.zeros_like(output))


@pytest.mark.parametrize("kind", ["mlp", "kan", "conv"])
def test_under_bf16_autocast_a_conditioner_returns_float32(kind):
    network = make_conditioner(ConditionerSpec(kind, hidden_features=8), 4, 4)
    torch.nn.init.normal_(network.output_layer.weight if kind != "kan"
                          else network.output_layer.spline_weight)
    inputs = torch.randn(2, 4, 3, 3) if kind == "conv" else torch.randn(5, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = network(inputs)
    assert output.dtype == torch.float32 and output.abs().sum() > 0


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown conditioner 'mlpx'"):
        make_conditioner(ConditionerSpec("mlpx"), 2, 2)
