"""Image flow models: the ImageFlow wrapper and the transform stacks it wraps."""

from mixerflow.models.flow import ImageFlow, build_model, count_parameters, match_width
from mixerflow.models.glow import Glow
from mixerflow.models.mixerflow import MixerFlow
from mixerflow.models.tarflow import TarFlow

__all__ = ["Glow", "ImageFlow", "MixerFlow", "TarFlow", "build_model", "count_parameters",
           "match_width"]
