"""Jet (model.kind: jet): exact inverse and log-det with either token mixing, the identity at
the start, the splits its patterns name, embeddings per coupling, and learning the digits."""

import pytest
import torch

from flowcheck import DEVICES, assert_exact_on, perturb
from mixerflow import train
from mixerflow.core.errors import UserError
from mixerflow.models import Jet, build_model, count_parameters
from mixerflow.models.jet import spatial_order
from mixerflow.training.config import load_config
from support import TINY, untrained_test_bpd


def tiny_flow(image_shape, overrides=()):
    cfg = load_config(None, [*TINY["jet"], *overrides])
    return perturb(build_model(cfg.model, image_shape, 256).eval(), scale=0.1)


@pytest.mark.parametrize("image_shape, overrides", [
    ((1, 4, 4), ["model.patch_size=2"]),
    ((3, 4, 8), ["model.patch_size=2", "model.couplings=4", "model.pattern=spatial",
                 "model.spatial_patterns=hstripes,vstripes-inv,checkerboard"]),
    ((3, 4, 4), ["model.patch_size=2", "model.token_mixing=mlp", "model.depth=2"]),
])
@pytest.mark.parametrize("device", DEVICES)
def test_jet_invertible_with_exact_logdet(image_shape, overrides, device):
    assert_exact_on(device, tiny_flow(image_shape, overrides).transform, image_shape)


def test_encode_decode_gives_the_images_back():
    flow = tiny_flow((1, 4, 4), ["model.patch_size=2", "model.token_mixing=mlp"])
    images = torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(flow.decode(flow.encode(images)), images)


@pytest.mark.parametrize("mixing", ["attention", "mlp"])
def test_a_fresh_jet_is_the_identity(mixing):
    cfg = load_config(None, [*TINY["jet"], "model.patch_size=2", f"model.token_mixing={mixing}"])
    y = torch.randn(2, 3, 4, 4)
    z, logdet = Jet.from_config(cfg.model, (3, 4, 4)).eval()(y)
    assert torch.equal(z, y) and torch.allclose(logdet, torch.zeros(2), atol=1e-5)


def test_the_pattern_cycles_and_each_split_is_what_it_names():
    cfg = load_config(None, [*TINY["jet"], "model.patch_size=2", "model.couplings=5",
                             "model.pattern=channels,spatial",
                             "model.spatial_patterns=checkerboard,vstripes-inv"])
    couplings = Jet.from_config(cfg.model, (1, 8, 8)).blocks  # a 4x4 grid of 4-value patches
    assert [c.axis_name for c in couplings] == ["channels", "spatial"] * 2 + ["channels"]
    checkerboard, stripes = couplings[1], couplings[3]
    assert checkerboard.order[:8].tolist() == [0, 2, 5, 7, 8, 10, 13, 15]  # (row + col) even
    assert stripes.order[:8].tolist() == [1, 3, 5, 7, 9, 11, 13, 15]  # inverse: odd columns
    channel_orders = [c.order.tolist() for c in couplings[::2]]
    assert all(sorted(order) == [0, 1, 2, 3] for order in channel_orders)
    assert len({tuple(order) for order in channel_orders}) > 1  # a permutation per coupling


def test_spatial_patterns_refuse_unequal_halves():
    assert spatial_order("hstripes", (2, 3)).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(UserError, match="checkerboard cannot split the 7x7 grid"):
        spatial_order("checkerboard", (7, 7))
    with pytest.raises(UserError, match="vstripes-inv cannot split the 2x3 grid"):
        spatial_order("vstripes-inv", (2, 3))


def test_attention_and_mlp_mixing_hold_the_same_parameters():
    sizes = {}
    for mixing in ("attention", "mlp"):
        cfg = load_config(None, ["model.kind=jet", "model.patch_size=4", "model.couplings=6",
                                 f"model.token_mixing={mixing}"])
        sizes[mixing] = count_parameters(build_model(cfg.model, (3, 32, 32), 256).transform)
    assert abs(sizes["mlp"] - sizes["attention"]) <= 0.001 * sizes["attention"]


@pytest.mark.parametrize("layer, pool, features", [
    ("block:1", "none", 16), ("z", "mean_patches", 4), ("block:2", "mean_channels", 4)])
def test_embeddings_are_the_images_between_couplings(layer, pool, features):
    flow = tiny_flow((1, 4, 4), ["model.patch_size=2"])
    images = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    assert flow.embed(images, layer, pool).shape == (3, features)
    if layer == "block:1":
        transform = flow.transform
        state, _ = transform.blocks[0](transform.patchify(
            flow.preprocess(images.float() + 0.5)[0])[0])
        image = transform.patchify.inverse(state)[0]
        assert torch.allclose(flow.embed(images, layer, pool), image.reshape(3, -1), atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["model.width=10", "model.heads=4"], "model.width.*multiple of model.heads"),
    (["model.coupling=additive"], "must be affine for model.kind jet"),
    (["model.levels=2"], "belongs to model.kind glow, not jet"),
    (["model.spatial_patterns=diagonal"], "model.spatial_patterns.*one of checkerboard"),
    (["model.depth=0"], "model.depth.*at least 1"),
])
def test_bad_jet_settings_are_named(overrides, message):
    with pytest.raises(UserError, match=message):
        load_config(None, ["model.kind=jet", *overrides])


@pytest.mark.slow
@pytest.mark.parametrize("mixing", ["attention", "mlp"])
def test_jet_learns_the_digits(tmp_path, mixing):
    overrides = ["data.name=digits", "data.val_size=137", "model.kind=jet",
                 "model.patch_size=2", "model.couplings=6", "model.width=32",
                 f"model.token_mixing={mixing}", "train.batch_size=64", "train.lr=0.002",
                 "train.warmup_steps=20", "train.eval_every=100", "train.init_batch_size=500",
                 "log.num_samples=4", f"log.out_dir={tmp_path}", "train.steps=150"]
    start = untrained_test_bpd(load_config(None, overrides))
    result = train(load_config(None, overrides), show_progress=False)
    assert result["test_bpd"] < start - 0.2
