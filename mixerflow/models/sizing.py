"""The size of a model before it is built: its parameter count, a width that matches another
model's, and whether its training state fits the device."""

import dataclasses

import torch

from mixerflow.core.device import available_bytes
from mixerflow.core.errors import UserError
from mixerflow.models.flow import build_transform, count_parameters
from mixerflow.models.kind import ModelConfig


def match_width(model_cfg: ModelConfig, image_shape: tuple[int, int, int],
                num_params: int, num_classes: int = 0) -> ModelConfig:
    """A copy of ``model_cfg`` whose width (its kind's ``with_width`` knob) gives the parameter
    count closest to ``num_params`` (class-conditional on ``num_classes`` classes where the
    config is); depth and structure unchanged."""
    classes = num_classes if model_cfg.class_conditional else 0

    def params(knob: int) -> int:
        return count_parameters(build_transform(
            model_cfg.with_width(knob), image_shape, classes))

    if params(1) > num_params:
        raise UserError(
            f"even the narrowest {model_cfg.kind} has more than {num_params:,} parameters; "
            f"lower model.{model_cfg.REPEATED} or the depth"
        )
    low, high = 1, 2  # params(low) <= target; grow high until params(high) > target
    while params(high) <= num_params:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if params(middle) <= num_params else (low, middle)
    return model_cfg.with_width(min((low, high), key=lambda knob: abs(params(knob) - num_params)))


TRAINING_BYTES_PER_PARAMETER = 16  # float32 weight, gradient and Adam's two moments


def estimate_parameters(model_cfg: ModelConfig, image_shape: tuple[int, int, int]) -> int:
    """The parameter count of the model ``model_cfg`` describes, from a build with one of its
    repeated blocks (``model_cfg.REPEATED``: blocks, or Glow's steps per level), so an absurd
    size costs nothing to find. The global random state is left as it was (the real model's
    initialisation must not move)."""
    with torch.random.fork_rng(devices=[]):
        one = dataclasses.replace(model_cfg, **{model_cfg.REPEATED: 1})
        one_params = count_parameters(build_transform(one, image_shape))
        return one_params * getattr(model_cfg, model_cfg.REPEATED)


def check_model_fits(model_cfg: ModelConfig, image_shape: tuple[int, int, int],
                     device: torch.device) -> None:
    """A UserError, before anything is built, when the weights, gradients and Adam state of
    the model alone would not fit in the device's free memory."""
    params = estimate_parameters(model_cfg, image_shape)
    needed, free = params * TRAINING_BYTES_PER_PARAMETER, available_bytes(device)
    if needed > free:
        raise UserError(
            f"the model has about {params:,} parameters: training needs at least "
            f"{needed / 2**30:.1f} GiB for weights, gradients and Adam state, and {device} has "
            f"{free / 2**30:.1f} GiB free; lower model.{model_cfg.REPEATED} or the widths"
        )
