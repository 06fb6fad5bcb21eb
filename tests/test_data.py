import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mixerflow.config import load_config
from mixerflow.data import load_splits
from mixerflow.errors import UserError


def splits_for(*overrides):
    return load_splits(load_config(None, list(overrides)).data)


def test_digits_are_offline_17_level_images_with_a_fixed_split():
    splits = splits_for("data.name=digits", "data.val_size=137")
    assert splits.num_levels == 17 and splits.image_shape == (1, 8, 8)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1300, 137, 360)
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.max() == 16
    assert set(splits.test.labels.tolist()) == set(range(10))
    again = splits_for("data.name=digits", "data.val_size=137")
    assert torch.equal(again.val.images, splits.val.images)


def test_val_size_must_leave_training_images_and_defaults_to_a_tenth():
    with pytest.raises(UserError, match="'data.val_size' \\(5000\\) must be below the 1437"):
        splits_for("data.name=digits", "data.val_size=5000")
    splits = splits_for("data.name=digits")  # no config at all: a tenth of train validates
    assert (len(splits.train), len(splits.val)) == (1294, 143)


def test_relative_data_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.name=npz:here/data", "data.root=../elsewhere"])
    assert cfg.data.name == f"npz:{tmp_path / 'here' / 'data'}"
    assert Path(cfg.data.root).is_absolute()


@pytest.mark.parametrize("data, message", [
    (np.random.default_rng(0).random((4, 48)), "pixel data are float64; expected integers"),
    (np.full((4, 48), 300, dtype=np.int16), "pixel values span 300..300; expected 0..255"),
    (np.full((4, 48), -1, dtype=np.int64), "pixel values span -1..-1"),
])
def test_npz_pixels_that_a_cast_would_change_are_refused(tmp_path, data, message):
    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", data=data, labels=np.arange(4))
    with pytest.raises(UserError, match=message):
        splits_for(f"data.name=npz:{tmp_path}", "data.val_size=1")


def test_npz_in_range_integers_and_label_mismatch(tmp_path):
    data = np.arange(4 * 48).reshape(4, 48) % 256
    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", data=data.astype(np.int32), labels=np.arange(4))
    assert torch.equal(splits_for(f"data.name=npz:{tmp_path}", "data.val_size=1").test.images,
                       torch.from_numpy(data.astype(np.uint8).reshape(4, 3, 4, 4)))
    np.savez(tmp_path / "test.npz", data=data.astype(np.uint8), labels=np.arange(3))
    with pytest.raises(UserError, match="'labels' is \\(3,\\) int64; expected one integer per"):
        splits_for(f"data.name=npz:{tmp_path}", "data.val_size=1")


def test_missing_data_root_names_the_file(tmp_path):
    with pytest.raises(UserError, match="train-images-idx3-ubyte\\[.gz\\] not found in .*MNIST"):
        splits_for("data.name=mnist", f"data.root={tmp_path}")
    with pytest.raises(UserError, match="CIFAR-10 not found"):
        splits_for("data.name=cifar10", f"data.root={tmp_path}")


def test_npz_folder_rows_are_chw_images(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        data = rng.integers(0, 256, (n, 3 * 4 * 4), dtype=np.uint8)
        np.savez(tmp_path / f"{split}.npz", data=data, labels=np.arange(n))
    splits = splits_for(f"data.name=npz:{tmp_path}", "data.val_size=2")
    assert splits.image_shape == (3, 4, 4)
    first = np.load(tmp_path / "test.npz")["data"][0]
    assert torch.equal(splits.test.images[0, 1].flatten(), torch.from_numpy(first[16:32]))


def test_npz_without_image_rows_is_rejected(tmp_path):
    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", pixels=np.zeros((2, 5)))
    with pytest.raises(UserError, match="not an image .npz"):
        splits_for(f"data.name=npz:{tmp_path}", "data.val_size=1")


def test_image_folder_with_resize(tmp_path):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (10, 12), (i * 40, 0, 200)).save(folder / f"{i}.png")
    splits = splits_for(f"data.name=folder:{tmp_path}", "data.image_size=8", "data.val_size=2")
    assert splits.image_shape == (3, 8, 8)
    assert len(splits.test) == 6 and set(splits.test.labels.tolist()) == {0, 1}


def test_image_folder_numbers_test_classes_as_train_and_keeps_grayscale(tmp_path):
    for split, classes in (("train", "abc"), ("test", "ac")):
        for cls in classes:
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("L", (4, 4), 10 * ord(cls) % 256).save(tmp_path / split / cls / "0.png")
    splits = splits_for(f"data.name=folder:{tmp_path}", "data.val_size=1")
    assert splits.image_shape == (1, 4, 4)
    assert splits.test.labels.tolist() == [0, 2]  # "c" is class 2, as in train
    assert splits.test.images[1].unique().tolist() == [10 * ord("c") % 256]


@pytest.mark.parametrize("damage, message", [
    ("empty", "Found no valid file"), ("corrupt", "is not a readable image"),
    ("rgb", "but the first image is (1, 4, 4)"),
])
def test_image_folder_damage_is_one_line(tmp_path, damage, message):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("L", (4, 4)).save(tmp_path / split / cls / "0.png")
    if damage == "empty":
        (tmp_path / "train" / "b" / "0.png").unlink()
    elif damage == "corrupt":
        (tmp_path / "train" / "b" / "0.png").write_bytes(b"\x89PNG broken")
    else:
        Image.new("RGB", (4, 4)).save(tmp_path / "test" / "b" / "1.png")
    with pytest.raises(UserError, match=re.escape(message)):
        splits_for(f"data.name=folder:{tmp_path}", "data.val_size=1")


@pytest.mark.parametrize(
    "name, first_test_label, shape",
    [("mnist", 7, (1, 28, 28)), ("fashion_mnist", 9, (1, 28, 28)), ("cifar10", 3, (3, 32, 32))],
)
def test_real_data_sets(shared_data, name, first_test_label, shape):
    splits = splits_for(f"data.name={name}", f"data.root={shared_data}")
    assert splits.image_shape == shape and splits.num_levels == 256
    assert len(splits.test) == 10000 and len(splits.train) + len(splits.val) in (60000, 50000)
    assert splits.test.labels[0].item() == first_test_label


def mnist_root(tmp_path, damage: str) -> Path:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    header = {"images": b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (2, 2, 2)),
              "labels": b"\x00\x00\x08\x01" + (2).to_bytes(4, "big")}
    body = {"images": bytes(8), "labels": bytes(2)}
    for prefix in ("train", "t10k"):
        for kind in ("images", "labels"):
            count = "3" if kind == "images" else "1"
            data = header[kind] + body[kind]
            if damage == "truncated" and kind == "images":
                data = data[:-3]
            if damage == "not idx":
                data = b"<html>not found</html>"
            (raw / f"{prefix}-{kind}-idx{count}-ubyte").write_bytes(data)
    if damage == "bad gzip":
        (raw / "train-images-idx3-ubyte").unlink()
        (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    return tmp_path


@pytest.mark.parametrize("damage, message", [
    ("truncated", "is truncated or corrupt: its header announces (2, 2, 2) values, it holds 5"),
    ("not idx", "is not an idx file of unsigned bytes"),
    ("bad gzip", "cannot be read"),
])
def test_damaged_mnist_files_are_one_line_errors(tmp_path, damage, message):
    root = mnist_root(tmp_path, damage)
    with pytest.raises(UserError, match=re.escape(message)):
        splits_for("data.name=mnist", f"data.root={root}", "data.val_size=1")


def test_an_intact_small_idx_set_loads(tmp_path):
    splits = splits_for("data.name=mnist", f"data.root={mnist_root(tmp_path, '')}",
                        "data.val_size=1")
    assert splits.image_shape == (1, 2, 2) and len(splits.test) == 2


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried "
                           "http://example/, got:\n<urlopen error [Errno -2] Name or service "
                           "not known>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(UserError, match="could not download MNIST into .*Name or service not"):
        splits_for("data.name=mnist", f"data.root={tmp_path}", "data.download=true")
