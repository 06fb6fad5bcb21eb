"""The model section: each kind's own keys, and old configs that held every kind's keys."""

import pytest

from mixerflow.models.kind import MODEL_KINDS
from mixerflow.training.config import config_from_dict, load_config


def test_each_model_kind_has_its_own_keys_and_old_configs_upgrade():
    from mixerflow.models import GlowConfig, MixerFlowConfig
    from mixerflow.training.checkpoint import upgrade_config_dict

    mixer, glow = load_config(None), load_config(None, ["model.kind=glow"])
    assert isinstance(mixer.model, MixerFlowConfig) and isinstance(glow.model, GlowConfig)
    assert "levels" not in mixer.to_dict()["model"] and "blocks" not in glow.to_dict()["model"]
    # before per-kind sections a saved config held every kind's keys, and "couplings"
    old = mixer.to_dict()
    old["model"] = {**glow.to_dict()["model"], **old["model"], "couplings": 3}
    del old["model"]["coupling_layers"]
    upgraded = config_from_dict(upgrade_config_dict(old))
    assert upgraded.model == MixerFlowConfig(coupling_layers=3)


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_a_config_of_today_upgrades_to_itself(kind):
    """Today's saved configs pass the upgrade unchanged (Jet's own ``couplings`` is not the
    old name of ``coupling_layers``)."""
    from mixerflow.training.checkpoint import upgrade_config_dict

    repeated = MODEL_KINDS[kind].config.REPEATED
    cfg = load_config(None, [f"model.kind={kind}", f"model.{repeated}=7"])
    assert config_from_dict(upgrade_config_dict(cfg.to_dict())) == cfg
