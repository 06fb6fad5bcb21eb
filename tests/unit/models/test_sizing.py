"""Parameter matching across kinds, and the size estimate that checks memory before a build."""


import pytest

from mixerflow.core.errors import UserError
from mixerflow.models import build_model, count_parameters, match_width
from mixerflow.training.config import load_config


@pytest.mark.parametrize("overrides, image_shape, target", [
    (["model.kind=glow", "model.levels=2", "model.steps_per_level=4"], (1, 8, 8), 84_432),
    (["model.kind=glow", "model.levels=2", "model.steps_per_level=8"], (1, 28, 28), 567_012),
    (["model.kind=glow", "model.levels=3", "model.steps_per_level=4"], (3, 32, 32), 2_000_000),
    (["model.conditioner=kan", "model.patch_hidden=64"], (1, 28, 28), 567_012),
    (["model.channel_mixing=maf"], (1, 28, 28), 567_012),
    (["model.kind=tarflow", "model.heads=8"], (1, 28, 28), 567_012),
    (["model.kind=jet", "model.patch_size=7"], (1, 28, 28), 567_012),
    (["model.kind=jet", "model.token_mixing=mlp"], (3, 32, 32), 1_500_000),
])
def test_parameter_matching_lands_within_five_percent(overrides, image_shape, target):
    cfg = load_config(None, overrides).model
    matched = match_width(cfg, image_shape, target)
    assert abs(count_parameters(build_model(matched, image_shape, 256)) - target) <= 0.05 * target
    assert getattr(matched, cfg.REPEATED) == getattr(cfg, cfg.REPEATED)  # depth unchanged
    if cfg.kind == "mixerflow":  # both widths scaled together
        ratio = cfg.patch_hidden / cfg.channel_hidden
        assert abs(matched.patch_hidden / matched.channel_hidden - ratio) < 0.05


def test_parameter_matching_refuses_an_impossible_target():
    cfg = load_config(None, ["model.kind=glow", "model.levels=2"]).model
    with pytest.raises(UserError, match="even the narrowest glow"):
        match_width(cfg, (3, 8, 8), 100)
