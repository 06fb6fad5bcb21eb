"""Image flow models: the ImageFlow wrapper and the transform stacks it wraps."""

from mixerflow.models.flow import ImageFlow, build_model, count_parameters
from mixerflow.models.glow import Glow, match_glow_width
from mixerflow.models.mixerflow import MixerFlow

__all__ = ["Glow", "ImageFlow", "MixerFlow", "build_model", "count_parameters", "match_glow_width"]
