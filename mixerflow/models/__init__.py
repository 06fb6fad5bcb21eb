"""Image flow models: the ImageFlow wrapper, the model-kind registry and the built-in kinds
(each kind's config class beside its transform; importing a kind's module registers it,
as the imports below do for the built-in three)."""

from mixerflow.models.flow import ImageFlow, build_model, count_parameters
from mixerflow.models.glow import Glow, GlowConfig
from mixerflow.models.kind import MODEL_KINDS, ImageTransform, ModelConfig, register_model
from mixerflow.models.mixerflow import MixerFlow, MixerFlowConfig
from mixerflow.models.sizing import match_width
from mixerflow.models.tarflow import TarFlow, TarFlowConfig

__all__ = ["MODEL_KINDS", "Glow", "GlowConfig", "ImageFlow", "ImageTransform", "MixerFlow",
           "MixerFlowConfig", "ModelConfig", "TarFlow", "TarFlowConfig", "build_model",
           "count_parameters", "match_width", "register_model"]
