from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mixerflow.core.errors import UserError
from mixerflow.data.splits import load_splits
from mixerflow.training.config import load_config
from support import mnist_files


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
    cfg = load_config(None, ["data.name=npz:here/data"])
    assert cfg.data.name == f"npz:{tmp_path / 'here' / 'data'}"
    assert Path(load_config(None, ["data.name=mnist", "data.root=../elsewhere"]).data.root) \
        == tmp_path / ".." / "elsewhere"


def test_npz_in_range_integers_and_label_mismatch(tmp_path):
    data = np.arange(4 * 48).reshape(4, 48) % 256
    for split in ("train", "test"):
        np.savez(tmp_path / f"{split}.npz", data=data.astype(np.int32), labels=np.arange(4))
    assert torch.equal(splits_for(f"data.name=npz:{tmp_path}", "data.val_size=1").test.images,
                       torch.from_numpy(data.astype(np.uint8).reshape(4, 3, 4, 4)))
    np.savez(tmp_path / "test.npz", data=data.astype(np.uint8), labels=np.arange(3))
    with pytest.raises(UserError, match="'labels' is \\(3,\\) int64; expected one integer per"):
        splits_for(f"data.name=npz:{tmp_path}", "data.val_size=1")


def test_npz_folder_rows_are_chw_images(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        data = rng.integers(0, 256, (n, 3 * 4 * 4), dtype=np.uint8)
        np.savez(tmp_path / f"{split}.npz", data=data, labels=np.arange(n))
    splits = splits_for(f"data.name=npz:{tmp_path}", "data.val_size=2")
    assert splits.image_shape == (3, 4, 4)
    first = np.load(tmp_path / "test.npz")["data"][0]
    assert torch.equal(splits.test.images[0, 1].flatten(), torch.from_numpy(first[16:32]))


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


@pytest.mark.parametrize(
    "name, first_test_label, shape",
    [("mnist", 7, (1, 28, 28)), ("fashion_mnist", 9, (1, 28, 28)), ("cifar10", 3, (3, 32, 32))],
)
def test_real_data_sets(shared_data, name, first_test_label, shape):
    splits = splits_for(f"data.name={name}", f"data.root={shared_data}")
    assert splits.image_shape == shape and splits.num_levels == 256
    assert len(splits.test) == 10000 and len(splits.train) + len(splits.val) in (60000, 50000)
    assert splits.test.labels[0].item() == first_test_label


def test_an_intact_small_idx_set_loads(tmp_path):
    mnist_files("intact")(tmp_path, None, None)
    splits = splits_for("data.name=mnist", f"data.root={tmp_path}", "data.val_size=1")
    assert splits.image_shape == (1, 4, 4) and len(splits.test) == 2
