"""mixerflow: normalizing flows for images — MixerFlow (an invertible MLP-Mixer) and Glow.

    flow = mixerflow.load_checkpoint("runs/quickstart/checkpoint.pt")
    images = flow.sample(16, temperature=0.7)      # uint8 (16, C, H, W)
    bpd = flow.bpd(images)                          # bits/dim per image
"""

from mixerflow.checkpoint import load_checkpoint, save_checkpoint
from mixerflow.config import Config, load_config
from mixerflow.data import load_splits
from mixerflow.errors import UserError
from mixerflow.models import Glow, ImageFlow, MixerFlow, build_model
from mixerflow.training import evaluate_bpd, train

__all__ = [
    "Config",
    "Glow",
    "ImageFlow",
    "MixerFlow",
    "UserError",
    "build_model",
    "evaluate_bpd",
    "load_checkpoint",
    "load_config",
    "load_splits",
    "save_checkpoint",
    "train",
]
