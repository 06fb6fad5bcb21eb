from pathlib import Path

import pytest

from mixerflow.config import Config, config_from_dict, load_config
from mixerflow.errors import UserError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert isinstance(load_config(path), Config)


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  blocks: 3\ntrain:\n  lr: 0.01\n")
    cfg = load_config(path, ["model.blocks=5", "train.max_minutes=2", "model.shift=false"])
    assert cfg.model.blocks == 5 and cfg.train.lr == 0.01
    assert cfg.train.max_minutes == 2.0 and cfg.model.shift is False


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 3e-4\n")  # YAML 1.1 reads this as a string
    assert load_config(path).train.lr == 3e-4
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3


@pytest.mark.parametrize("content, message", [
    (b"train:\n  lr: \xff\xfe\n", "is not UTF-8 text"),
    (b"- a\n- b\n", "must hold a mapping of sections (data:, model:, train:, log:), not a list"),
    (b"train: [\n", "is not valid YAML"),
])
def test_config_files_that_are_not_configs(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load_config(path, ["train.lr=0.1"])
    assert "\n" not in str(err.value)


def test_round_trip_through_a_dict():
    cfg = load_config(None, ["model.coupling=rq-spline", "data.root=/x"])
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.bloks=3"], "unknown config key 'model.bloks'"),
        (["modle.blocks=3"], "unknown config key 'modle'"),
        (["model.blocks=three"], "'model.blocks' must be an integer, got 'three'"),
        (["model.blocks=0"], "'model.blocks' must be at least 1"),
        (["model.coupling=cubic"], "'model.coupling' must be one of affine, additive, rq-spline"),
        (["model.shift=maybe"], "'model.shift' must be true or false"),
        (["train.lr=-1"], "'train.lr' must be positive"),
        (["train.lr=.inf"], "'train.lr' must be a finite number"),
        (["train.max_minutes=.nan"], "'train.max_minutes' must be a finite number"),
        (["train.lr=fast"], "'train.lr' must be a number, got 'fast'"),
        (["train.init_batch_size=1"], "'train.init_batch_size' must be at least 32"),
        (["data.name=imagenet"], "'data.name' must be one of"),
        (["train.device=tpu"], "'train.device' must be auto, cpu, cuda"),
        (["blocks"], "not of the form key.sub=value"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        load_config(None, overrides)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(broken)
