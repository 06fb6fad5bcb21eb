"""Image files of uncommon modes are read with the values they show."""

import numpy as np
import pytest
from PIL import Image

from mixerflow.data.splits import load_splits
from mixerflow.training.config import load_config


def folder_of(tmp_path, image: Image.Image, suffix: str = ".png"):
    """The splits of an image folder whose every image (one class, both splits) is ``image``
    saved anew (no two files the same)."""
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        for i in range(2):
            image.save(tmp_path / split / "a" / f"{i}{suffix}")
    return load_splits(load_config(None, [f"data.name=folder:{tmp_path}",
                                          "data.val_size=1"]).data)


def test_16_bit_grayscale_is_scaled_to_8_bits_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.uint16)  # 0, 1, 128, 255 in 8 bits
    splits = folder_of(tmp_path, Image.fromarray(values))
    assert splits.image_shape == (1, 1, 4)
    assert splits.test.images[0, 0, 0].tolist() == [0, 1, 128, 255]


def test_cmyk_is_read_as_the_rgb_it_shows(tmp_path):
    cmyk = Image.new("CMYK", (2, 2), (255, 0, 0, 0))  # full cyan ink: no red
    splits = folder_of(tmp_path, cmyk, ".tif")
    assert splits.image_shape == (3, 2, 2)
    assert splits.test.images[0, :, 0, 0].tolist() == [0, 255, 255]


@pytest.mark.parametrize("mode, colour, shape", [
    ("RGBA", (10, 20, 30, 255), (3, 2, 2)), ("LA", (77, 255), (1, 2, 2))])
def test_opaque_alpha_is_dropped_and_the_colour_kept(tmp_path, mode, colour, shape):
    splits = folder_of(tmp_path, Image.new(mode, (2, 2), colour))
    assert splits.image_shape == shape
    assert splits.test.images[0, :, 1, 1].tolist() == list(colour[:-1])


def test_a_palette_image_is_read_as_its_colours(tmp_path):
    palette = Image.new("P", (2, 2), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    splits = folder_of(tmp_path, palette)
    assert splits.test.images[0, :, 0, 1].tolist() == [200, 100, 50]
