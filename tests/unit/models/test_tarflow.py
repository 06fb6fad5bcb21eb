"""The attention flow (model.kind: tarflow): exact inverse and log-det, identity at the
start, causality, the KV-cached inverse, embeddings per block, and learning the digits."""

import pytest
import torch

from flowcheck import DEVICES, assert_exact_on, perturb
from mixerflow import train
from mixerflow.core.errors import UserError
from mixerflow.models import TarFlow, build_model
from mixerflow.training.config import load_config
from mixerflow.transforms.autoregressive import AutoregressiveAffine
from support import TINY, untrained_test_bpd


def tiny_flow(image_shape, overrides=()):
    cfg = load_config(None, [*TINY["tarflow"], *overrides])
    return perturb(build_model(cfg.model, image_shape, 256).eval(), scale=0.1)


@pytest.mark.parametrize("image_shape, overrides", [
    ((1, 4, 4), ["model.patch_size=2"]),
    ((3, 4, 6), ["model.patch_size=2", "model.blocks=3", "model.attention_layers=1"]),
    ((3, 8, 8), ["model.patch_size=4"]),
])
@pytest.mark.parametrize("device", DEVICES)
def test_tarflow_invertible_with_exact_logdet(image_shape, overrides, device):
    assert_exact_on(device, tiny_flow(image_shape, overrides).transform, image_shape)


def test_encode_decode_gives_the_images_back():
    flow = tiny_flow((1, 4, 4), ["model.patch_size=2"])
    images = torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(flow.decode(flow.encode(images)), images)


def test_a_fresh_tarflow_is_the_identity():
    cfg = load_config(None, [*TINY["tarflow"], "model.patch_size=2"])
    y = torch.randn(2, 3, 4, 4)
    z, logdet = TarFlow.from_config(cfg.model, (3, 4, 4)).eval()(y)
    assert torch.allclose(z, y, atol=1e-6)
    assert torch.allclose(logdet, torch.zeros(2), atol=1e-5)


def test_a_token_depends_on_earlier_tokens_only_and_the_first_passes_unchanged():
    transform = perturb(AutoregressiveAffine(3, 5, width=8, layers=2, heads=2).double())
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: transform(v)[0], x)[0, :, :, 0]
    by_token = jacobian.abs().sum(dim=(1, 3))  # (output token, input token)
    assert torch.equal(by_token.triu(1), torch.zeros(5, 5))  # nothing from later tokens
    assert by_token.tril(-1)[by_token.tril(-1) != 0].numel() == 10  # and from every earlier one
    assert torch.equal(transform(x)[0][:, 0], x[:, 0])


def test_the_cached_inverse_equals_solving_token_by_token_without_a_cache():
    transform = perturb(AutoregressiveAffine(3, 6, width=8, layers=2, heads=2))
    z = torch.randn(4, 6, 3)
    x, _ = transform.inverse(z)
    solved = z.clone()  # fixed-point iteration: after T rounds every token is exact
    for _ in range(6):
        log_scale, shift = transform._log_scale_and_shift(solved[:, :-1])
        solved = torch.cat([z[:, :1], (z[:, 1:] - shift) * torch.exp(-log_scale)], dim=1)
    assert torch.allclose(x, solved, atol=1e-5)


def test_odd_blocks_run_the_patches_in_reverse():
    flow = tiny_flow((1, 4, 4), ["model.patch_size=2"])
    assert [block.reverse for block in flow.transform.blocks] == [False, True]


@pytest.mark.parametrize("layer, pool, features", [
    ("block:1", "none", 16), ("z", "mean_patches", 4), ("block:2", "mean_channels", 4)])
def test_embeddings_are_the_states_between_blocks(layer, pool, features):
    flow = tiny_flow((1, 4, 4), ["model.patch_size=2"])
    images = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    assert flow.embed(images, layer, pool).shape == (3, features)
    if layer == "block:1":
        state, _ = flow.transform.blocks[0](flow.preprocess(images.float() + 0.5)[0])
        assert torch.allclose(flow.embed(images, layer, pool), state.reshape(3, -1), atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["model.width=10", "model.heads=4"], "model.width.*multiple of model.heads"),
    (["model.coupling=rq-spline"], "must be affine for model.kind tarflow"),
    (["model.channel_hidden=8"], "belongs to model.kind mixerflow, not tarflow"),
    (["model.attention_layers=0"], "model.attention_layers.*at least 1"),
])
def test_bad_tarflow_settings_are_named(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(None, ["model.kind=tarflow", *overrides])


def test_a_single_patch_is_named():
    cfg = load_config(None, ["model.kind=tarflow", "model.patch_size=4"])
    with pytest.raises(UserError, match="single patch"):
        build_model(cfg.model, (1, 4, 4), 256)


@pytest.mark.slow
def test_tarflow_learns_the_digits(tmp_path):
    overrides = ["data.name=digits", "data.val_size=137", "model.kind=tarflow",
                 "model.patch_size=2", "model.width=32", "train.batch_size=64", "train.lr=0.002",
                 "train.warmup_steps=20", "train.eval_every=100", "train.init_batch_size=500",
                 "log.num_samples=4", f"log.out_dir={tmp_path}", "train.steps=150"]
    start = untrained_test_bpd(load_config(None, overrides))
    result = train(load_config(None, overrides), show_progress=False)
    assert result["test_bpd"] < start - 0.2
