"""The token network of Jet's couplings: attention and MLP-Mixer layers of one parameter
count, both mixing every token with every other, starting at zero."""

import pytest
import torch

from flowcheck import perturb
from mixerflow.nn.token_net import TokenNet, mixer_widths


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("width, tokens, mlp_width", [
    (128, 64, 512), (128, 8, 512), (64, 256, 256), (16, 98, 64), (8, 2, 32)])
def test_mlp_mixing_holds_the_parameters_of_attention(width, tokens, mlp_width):
    nets = {mixing: TokenNet(5, 6, tokens, width, depth=2, heads=4, mlp_width=mlp_width,
                             mixing=mixing) for mixing in ("attention", "mlp")}
    gap = parameters(nets["mlp"]) - parameters(nets["attention"])
    assert abs(gap) <= 2 * (width + 1)  # under half a hidden unit's 2·width + 1 per layer


def test_too_narrow_for_its_tokens_a_mixer_keeps_one_token_unit_and_is_the_larger():
    token_width, mlp_width = mixer_widths(8, 300, 32)
    assert token_width == 1 and 1 <= mlp_width < 32
    nets = [TokenNet(5, 6, 300, 8, depth=1, heads=2, mlp_width=32, mixing=mixing)
            for mixing in ("attention", "mlp")]
    assert parameters(nets[1]) > parameters(nets[0])


@pytest.mark.parametrize("mixing", ["attention", "mlp"])
def test_every_output_token_sees_every_input_token(mixing):
    net = perturb(TokenNet(3, 4, 5, width=8, depth=1, heads=2, mlp_width=16, mixing=mixing))
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: net.double()(v), x)[0, :, :, 0]
    by_token = jacobian.abs().sum(dim=(1, 3))  # (output token, input token)
    assert (by_token > 0).all()


@pytest.mark.parametrize("mixing", ["attention", "mlp"])
def test_a_fresh_token_net_outputs_zero(mixing):
    net = TokenNet(3, 4, 5, width=8, depth=2, heads=2, mlp_width=16, mixing=mixing)
    assert torch.equal(net(torch.randn(2, 5, 3)), torch.zeros(2, 5, 4))
