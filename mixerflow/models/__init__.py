"""Image flow models: the ImageFlow wrapper and the transform stacks it wraps."""

from mixerflow.models.flow import ImageFlow, build_model
from mixerflow.models.mixerflow import MixerFlow

__all__ = ["ImageFlow", "MixerFlow", "build_model"]
