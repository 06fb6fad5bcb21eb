
import pytest

from mixerflow.training.config import Config, config_from_dict, load_config
from support import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


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


def test_round_trip_through_a_dict():
    cfg = load_config(None, ["model.coupling=rq-spline", "data.name=mnist",
                              "data.root=/x"])
    assert config_from_dict(cfg.to_dict()) == cfg
