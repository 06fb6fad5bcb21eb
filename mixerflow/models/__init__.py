"""Image flow models: the ImageFlow wrapper, the model-kind registry and the built-in kinds.

A kind is one file (its config class beside its transform) and one ``register_model`` line;
the built-in kinds' lines are below, in the order messages list them.
"""

from mixerflow.models.flow import ImageFlow, build_model, count_parameters
from mixerflow.models.glow import Glow, GlowConfig
from mixerflow.models.jet import Jet, JetConfig
from mixerflow.models.kind import MODEL_KINDS, ImageTransform, ModelConfig, register_model
from mixerflow.models.mixerflow import MixerFlow, MixerFlowConfig, upgrade_state_dict
from mixerflow.models.sizing import match_width
from mixerflow.models.tarflow import TarFlow, TarFlowConfig

register_model(MixerFlowConfig, MixerFlow, upgrade_state_dict)
register_model(GlowConfig, Glow)
register_model(TarFlowConfig, TarFlow)
register_model(JetConfig, Jet)

__all__ = ["MODEL_KINDS", "Glow", "GlowConfig", "ImageFlow", "ImageTransform", "Jet", "JetConfig",
           "MixerFlow", "MixerFlowConfig", "ModelConfig", "TarFlow", "TarFlowConfig", "build_model",
           "count_parameters", "match_width", "register_model"]
