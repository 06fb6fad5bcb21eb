"""mixerflow: normalizing flows for images — MixerFlow (an invertible MLP-Mixer), Glow and an
attention flow, trained and compared by bits per dimension.

    flow = mixerflow.load_checkpoint("runs/quickstart/checkpoint.pt")
    images = flow.sample(16, temperature=0.7)      # uint8 (16, C, H, W)
    bpd = flow.bpd(images)                          # bits/dim per image
"""

from mixerflow.core.errors import UserError
from mixerflow.data.splits import load_splits
from mixerflow.models import (
    Glow,
    ImageFlow,
    ImageTransform,
    MixerFlow,
    ModelConfig,
    TarFlow,
    build_model,
    register_model,
)
from mixerflow.training.checkpoint import load_checkpoint, save_checkpoint
from mixerflow.training.config import Config, load_config
from mixerflow.training.evaluate import evaluate_bpd
from mixerflow.training.loop import train

__all__ = [
    "Config",
    "Glow",
    "ImageFlow",
    "ImageTransform",
    "MixerFlow",
    "ModelConfig",
    "TarFlow",
    "UserError",
    "build_model",
    "evaluate_bpd",
    "load_checkpoint",
    "load_config",
    "load_splits",
    "register_model",
    "save_checkpoint",
    "train",
]
