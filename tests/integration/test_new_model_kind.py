"""A model kind added from this file alone: its config class, its Transform and one
registry call. The ``mixerflow`` command then trains, evaluates, samples and embeds it, and
its checkpoint loads: adding a kind needs no edit of the package."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import mixerflow
from mixerflow.cli import main
from mixerflow.models.kind import MODEL_KINDS


@dataclass
class ElementwiseConfig(mixerflow.ModelConfig):
    """A toy kind: ``layers`` learned affine maps of every pixel, one scale and shift each."""

    kind: str = "elementwise"
    layers: int = 2

    REPEATED = "layers"

    def with_width(self, knob: int) -> "ElementwiseConfig":
        return dataclasses.replace(self, layers=knob)


class Elementwise(mixerflow.ImageTransform):
    """``z = x · exp(s) + b`` per pixel, ``layers`` times; exact inverse and log-det."""

    LAYERS = "z"
    POOLS = ("none",)

    def __init__(self, image_shape: tuple[int, int, int], layers: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(layers, *image_shape))
        self.shift = nn.Parameter(torch.zeros(layers, *image_shape))

    @classmethod
    def from_config(cls, cfg: ElementwiseConfig, image_shape) -> "Elementwise":
        return cls(image_shape, cfg.layers)

    def forward(self, inputs, context=None):
        for log_scale, shift in zip(self.log_scale, self.shift, strict=True):
            inputs = inputs * log_scale.exp() + shift
        logabsdet = self.log_scale.sum().expand(inputs.shape[0])
        return inputs, logabsdet

    def inverse(self, inputs, context=None):
        for log_scale, shift in zip(self.log_scale.flip(0), self.shift.flip(0), strict=True):
            inputs = (inputs - shift) * (-log_scale).exp()
        return inputs, -self.log_scale.sum().expand(inputs.shape[0])

    def embed(self, inputs, layer="z", pool="none"):
        self.check_pool(pool)
        return self(inputs)[0].flatten(1)


@pytest.fixture
def elementwise_kind():
    kinds = dict(MODEL_KINDS)
    mixerflow.register_model(ElementwiseConfig, Elementwise)  # the one registry line
    yield
    MODEL_KINDS.clear()
    MODEL_KINDS.update(kinds)


def test_a_kind_defined_here_trains_evaluates_samples_and_embeds(elementwise_kind, tmp_path,
                                                                  capsys):
    config = tmp_path / "elementwise.yaml"
    config.write_text("data: {name: digits, val_size: 137}\nmodel: {kind: elementwise, "
                      "layers: 2}\ntrain: {steps: 300, lr: 0.01, init_batch_size: 64, "
                      "eval_every: 100}\nlog: {num_samples: 4}\n")
    run = tmp_path / "run"
    main(["train", "--config", str(config), "--no-progress", f"log.out_dir={run}"])
    trained = capsys.readouterr().out
    assert "elementwise: 256 parameters" in trained
    test_bpd = float(trained.split("test bits/dim ")[1].split()[0])
    assert test_bpd < 3.9  # log2(17) = 4.09 is the uniform model it starts from

    main(["evaluate", "--checkpoint", str(run / "checkpoint.pt")])
    assert f"test bits/dim {test_bpd:.4f}" in capsys.readouterr().out

    main(["sample", "--checkpoint", str(run / "checkpoint.pt"), "--n", "5", "--npy",
          "--reconstruct", "20"])
    assert "max pixel error 0" in capsys.readouterr().out
    samples = np.load(run / "samples.npy")
    assert samples.shape == (5, 1, 8, 8) and samples.max() < 17

    main(["embed", "--checkpoint", str(run / "checkpoint.pt"), "--no-progress"])
    assert "embeddings z/none: 64 features" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:  # the kind's own POOLS are what is checked
        main(["embed", "--checkpoint", str(run / "checkpoint.pt"), "--pool", "mean_patches",
              "--out", str(tmp_path / "other.npz")])
    assert stopped.value.code == 2 and not (tmp_path / "other.npz").exists()
    assert capsys.readouterr().err == "error: pool 'mean_patches': Elementwise pools are none\n"

    flow = mixerflow.load_checkpoint(run / "checkpoint.pt")
    assert isinstance(flow.transform, Elementwise) and flow.config.model.layers == 2


def test_an_unregistered_kind_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--no-progress", "model.kind=elementwise", f"log.out_dir={tmp_path}"])
    assert stopped.value.code == 2
    assert "model.kind' must be one of mixerflow, glow, tarflow, jet; got 'elementwise'" in \
        capsys.readouterr().err
