"""Readers of the file formats images come in, each giving uint8 pixels or a stream of
chunks ``(images (n, C, H, W) uint8, labels (n,) int64)``: MNIST's idx files, image .npz files
(``data`` N x 3·s·s CHW rows + ``labels``), the downsampled-ImageNet batch files and image
folders (``train/<class>/*``, ``test/<class>/*``). A damaged file is a one-line UserError."""

import gzip
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mixerflow.core.errors import UserError
from mixerflow.core.files import distinct_files
from mixerflow.data.images import SPLIT_NAMES, ImageSet

Chunks = Iterator[tuple[np.ndarray, np.ndarray]]  # (uint8 images (n, C, H, W), labels (n,))
Streams = dict[str, tuple[int, tuple, Chunks]]  # split name -> (count, image shape, chunks)


def read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (MNIST's format), checked against its own header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} cannot be read ({err}); replace it with a good copy") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise UserError(f"{path} is not an idx file of unsigned bytes (MNIST's format)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) < header or len(raw) - header != int(np.prod(shape)):
        raise UserError(f"{path} is truncated or corrupt: its header announces {shape} values, "
                        f"it holds {max(len(raw) - header, 0)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _npz_member_shape(path: Path, member: str) -> tuple[int, ...]:
    """The shape of array ``member`` in an .npz, read from its header (no data loaded)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{member}.npy") as f:
            version = np.lib.format.read_magic(f)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            return reader(f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is not an .npz with {member!r} ({err})") from None


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The ``data`` and ``labels`` arrays of an image .npz; a damaged file is a UserError."""
    try:
        with np.load(path) as archive:
            return archive["data"], archive["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is not an image .npz with 'data' and 'labels' ({err})") from None


def as_pixels(data: np.ndarray, where: str) -> np.ndarray:
    """``data`` as uint8 pixel values, refusing what a cast would silently change (floats in
    [0, 1), values outside 0..255)."""
    if data.dtype == np.uint8:
        return data
    if not np.issubdtype(data.dtype, np.integer):
        raise UserError(f"{where}: pixel data are {data.dtype}; expected integers 0..255 "
                        "(uint8)")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise UserError(f"{where}: pixel values span {data.min()}..{data.max()}; expected "
                        "0..255")
    return data.astype(np.uint8)


def _batch_files_chunks(paths: list[Path], side: int) -> Chunks:
    for path in paths:
        data, labels = read_npz(path)
        data, labels = as_pixels(data, str(path)), np.asarray(labels, dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * side * side or len(labels) != len(data):
            raise UserError(f"{path}: expected 'data' rows of 3x{side}x{side} values and one "
                            f"label per row, got {data.shape} and {len(labels)} labels")
        yield data.reshape(-1, 3, side, side), labels


def imagenet_batches(src: Path, side: int) -> Streams:
    """Downsampled ImageNet (Chrabaszcz et al. 2017): ``train_data_batch_<k>.npz`` in k order
    and ``val_data.npz`` (the test split), rows of ``3·side²`` uint8 CHW values."""
    src = Path(src)
    number = re.compile(r"train_data_batch_(\d+)\.npz$")
    train = sorted((p for p in src.glob("train_data_batch_*.npz") if number.search(p.name)),
                   key=lambda p: int(number.search(p.name).group(1)))
    val = src / "val_data.npz"
    if not train or not val.is_file():
        raise UserError(f"{src} does not hold train_data_batch_*.npz and val_data.npz "
                        "(the downsampled-ImageNet files)")
    splits = {}
    for name, paths in (("train", train), ("test", [val])):
        counts = [_npz_member_shape(p, "data") for p in paths]
        bad = [p for p, c in zip(paths, counts, strict=True) if c[1:] != (3 * side * side,)]
        if bad:
            raise UserError(f"{bad[0]} does not hold {side}x{side} images (rows of "
                            f"{_npz_member_shape(bad[0], 'data')[1:]} values)")
        splits[name] = (sum(c[0] for c in counts), (3, side, side),
                        _batch_files_chunks(paths, side))
    return splits


GRAY_MODES = ("1", "L", "LA", "La")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # grayscale 0..65535
NO_8_BIT_READING = {"I": "32-bit integer", "F": "floating-point"}


def _open_image(path: str):
    """An image file as PIL, its values kept: grayscale stays one channel (16-bit values
    scaled to 8 bits), colour (palette, CMYK …) becomes RGB; transparency, 32-bit and float
    pixels, and what the decoder refuses (a decompression bomb …) are UserErrors."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return _eight_bit(image, path)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        # PIL's UnidentifiedImageError is an OSError
        raise UserError(f"{path} is not a readable image ({err})") from None


def _eight_bit(image, path: str):
    """``image`` (PIL) as mode ``L`` or ``RGB`` with the values it shows."""
    from PIL import Image

    if image.mode in NO_8_BIT_READING:
        raise UserError(f"{path} holds {NO_8_BIT_READING[image.mode]} pixels (mode "
                        f"{image.mode}); save it as an 8- or 16-bit image")
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.uint32)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # a palette's transparency becomes alpha
    if "A" in image.getbands() and image.getchannel("A").getextrema()[0] < 255:
        raise UserError(f"{path} has transparent pixels (mode {image.mode}); mixerflow reads "
                        "no alpha: flatten it onto a background first")
    return image.convert("L" if image.mode in GRAY_MODES else "RGB")


def folder_images(src: Path, image_size: int | None) -> Streams:
    """``train/<class>/*`` and ``test/<class>/*`` image files, streamed one by one; classes
    are numbered by their sorted names in train (test must use the same names). Grayscale
    folders give one channel; every image must have the same size and channels."""
    import torchvision
    from torchvision.transforms import v2

    steps = [v2.PILToTensor()]
    if image_size:
        steps.insert(0, v2.Resize((image_size, image_size)))
    splits, classes, paths = {}, None, []
    for name in SPLIT_NAMES:
        folder = Path(src) / name
        if not folder.is_dir():
            raise UserError(f"image folder {folder} not found (expected train/ and test/)")
        try:
            dataset = torchvision.datasets.ImageFolder(str(folder), transform=v2.Compose(steps),
                                                       loader=_open_image)
        except (FileNotFoundError, OSError) as err:  # e.g. a class folder with no image
            raise UserError(f"image folder {folder}: {err}") from None
        classes = classes or dataset.classes
        unknown = sorted(set(dataset.classes) - set(classes))
        if unknown:
            raise UserError(f"{folder} has classes that train/ lacks: {', '.join(unknown)}")
        remap = np.array([classes.index(c) for c in dataset.classes], dtype=np.int64)
        shape = tuple(dataset[0][0].shape)

        def chunks(dataset=dataset, remap=remap, shape=shape) -> Chunks:
            for (path, label), (image, _) in zip(dataset.samples, dataset, strict=True):
                if tuple(image.shape) != shape:
                    raise UserError(f"{path} is {tuple(image.shape)} (channels, height, width) "
                                    f"but the first image is {shape}; set data.image_size or "
                                    "make the channels agree")
                yield image.numpy()[None], remap[[label]]

        splits[name] = (len(dataset), shape, chunks())
        paths.extend(path for path, _ in dataset.samples)
    distinct_files(paths, f"image folder {src}")
    return splits


def fill(images: np.ndarray, labels: np.ndarray, chunks: Chunks, name: str,
          progress=lambda n: None) -> None:
    """Copy ``chunks`` into ``images (count, *shape)`` and ``labels``, checking that the
    source holds exactly the images it announced, all of one shape."""
    count, shape = len(images), tuple(images.shape[1:])
    filled = 0
    for chunk_images, chunk_labels in chunks:
        if tuple(chunk_images.shape[1:]) != shape:
            raise UserError(f"{name}: images of shape {tuple(chunk_images.shape[1:])} "
                            f"among images of shape {shape}")
        end = filled + len(chunk_images)
        if end > count:
            raise UserError(f"{name}: the source holds more than the {count} images it announced")
        images[filled:end], labels[filled:end] = chunk_images, chunk_labels
        filled = end
        progress(len(chunk_images))
    if filled != count:
        raise UserError(f"{name}: the source announced {count} images but held {filled}")


def collect(count: int, shape: tuple, chunks: Chunks) -> tuple[torch.Tensor, torch.Tensor]:
    """A source's chunks gathered in memory: images ``(count, *shape)`` uint8, labels."""
    images, labels = np.empty((count, *shape), dtype=np.uint8), np.empty(count, dtype=np.int64)
    fill(images, labels, chunks, "images")
    return torch.from_numpy(images), torch.from_numpy(labels)


def loaded_sets(train: ImageSet, test: ImageSet) -> Streams:
    """Sets already in memory (:class:`ImageSet`) as one chunk each."""
    return {name: (len(data), tuple(data.images.shape[1:]),
                   iter([(data.images.numpy(), data.labels.numpy())]))
            for name, data in (("train", train), ("test", test))}
