"""Patchify, Shift, Transpose: reshapes that round-trip exactly with log-det 0."""

import pytest
import torch
from nflows.transforms.base import CompositeTransform

from flowcheck import assert_invertible, assert_logdet_matches_jacobian
from mixerflow.core.errors import UserError
from mixerflow.transforms.patches import Patchify, Shift, Transpose
from mixerflow.transforms.preprocess import ScaleToUnit


def test_patchify_cuts_row_major_patches():
    image = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    patches, logdet = Patchify((2, 4, 6), patch_size=2)(image)
    assert patches.shape == (1, 6, 8)
    # patch 4 is grid row 1, column 1: pixels rows 2-3, columns 2-3 of both channels
    assert torch.equal(patches[0, 4], image[0, :, 2:4, 2:4].reshape(-1))
    assert torch.equal(logdet, torch.zeros(1))


@pytest.mark.parametrize(
    "transform, shape",
    [
        (Patchify((3, 4, 6), 2), (2, 3, 4, 6)),
        (Shift(1), (2, 3, 4, 6)),
        (Transpose(), (2, 5, 7)),
        (ScaleToUnit(17), (2, 1, 3, 3)),
    ],
)
def test_volume_preserving_or_linear_transforms(transform, shape):
    inputs = torch.rand(shape) * 10
    assert_invertible(transform, inputs)
    assert_logdet_matches_jacobian(transform, inputs)


def test_patchify_rejects_a_patch_size_that_does_not_divide():
    with pytest.raises(UserError, match="patch_size 3 does not divide the image size 8x8"):
        Patchify((1, 8, 8), 3)


def test_composite_of_reshapes_round_trips_an_image():
    patchify = Patchify((1, 4, 4), 2)
    chain = CompositeTransform([Shift(1), patchify, Transpose()])
    assert_invertible(chain, torch.randn(2, 1, 4, 4), atol=0)
