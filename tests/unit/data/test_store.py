"""prepare -> memory-mapped store -> loader gives back exactly the source's images and labels,
for every kind of source; training reads the store without copying its training split."""


import numpy as np
import pytest
import torch
from PIL import Image

from mixerflow import load_config, load_splits, train
from mixerflow.cli import main
from mixerflow.core.errors import UserError
from mixerflow.data.formats import imagenet_batches
from mixerflow.data.images import IndexedImages
from mixerflow.data.sampler import BatchSampler
from mixerflow.data.sources import DataConfig, load_train_test
from mixerflow.data.store import write_store

rng = np.random.default_rng(0)


def batch_file(path, count: int, side: int, first_label: int = 1) -> tuple[np.ndarray, list]:
    data = rng.integers(0, 256, (count, 3 * side * side), dtype=np.uint8)
    labels = list(range(first_label, first_label + count))  # a list, as in the originals
    np.savez(path, data=data, labels=labels, mean=data.mean(0))
    return data.reshape(count, 3, side, side), labels


def prepare(*argv: str) -> None:
    main(["prepare", *argv, "--no-progress"])


def test_imagenet_batch_files_round_trip_in_batch_order(tmp_path):
    src = tmp_path / "Imagenet32_train"
    src.mkdir()
    parts = {k: batch_file(src / f"train_data_batch_{k}.npz", 3 + k, 32, 10 * k)
             for k in (10, 2, 1)}  # numeric order 1, 2, 10, not the names' order
    val_images, val_labels = batch_file(src / "val_data.npz", 4, 32)
    prepare("imagenet32", "--src", str(src), "--data-root", str(tmp_path / "data"))
    train_set, test_set, levels = load_train_test(DataConfig("imagenet32", tmp_path / "data"))
    assert levels == 256 and train_set.mapped
    assert torch.equal(train_set.images, torch.from_numpy(
        np.concatenate([parts[k][0] for k in (1, 2, 10)])))
    assert train_set.labels.tolist() == sum((parts[k][1] for k in (1, 2, 10)), [])
    assert torch.equal(test_set.images, torch.from_numpy(val_images))
    assert test_set.labels.tolist() == val_labels


def test_imagenet_64_and_a_wrong_side_is_named(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    images, _ = batch_file(src / "train_data_batch_1.npz", 3, 64)
    batch_file(src / "val_data.npz", 2, 64)
    meta = write_store(tmp_path / "i64", "imagenet64", imagenet_batches(src, 64), 256, False)
    assert meta["splits"]["train"]["shape"] == [3, 64, 64]
    with pytest.raises(UserError, match="does not hold 32x32 images"):
        imagenet_batches(src, 32)


def test_cifar10_npz_round_trip(tmp_path):
    (tmp_path / "cifar10").mkdir()
    for split, count in (("train", 12), ("test", 5)):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        np.savez(tmp_path / "cifar10" / f"{split}.npz", data=data, labels=np.arange(count) % 10)
    prepare("cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "store"))
    source = load_train_test(DataConfig("cifar10", str(tmp_path)))
    mapped = load_train_test(DataConfig(f"store:{tmp_path / 'store'}"))
    for ours, theirs in zip(mapped[:2], source[:2], strict=True):
        assert torch.equal(ours.images, theirs.images)
        assert torch.equal(ours.labels, theirs.labels)


def test_image_folder_round_trip_with_train_class_numbers(tmp_path):
    expected = {"train": [], "test": []}
    for split, classes in (("train", ("a", "b", "c")), ("test", ("a", "c"))):
        for name in classes:
            (tmp_path / "imgs" / split / name).mkdir(parents=True)
            pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / split / name / "0.png")
            expected[split].append((pixels.transpose(2, 0, 1), "abc".index(name)))
    prepare(f"folder:{tmp_path / 'imgs'}", "--out", str(tmp_path / "store"))
    sets = load_train_test(DataConfig(f"store:{tmp_path / 'store'}"))
    for data, split in zip(sets[:2], ("train", "test"), strict=True):
        assert torch.equal(data.images, torch.from_numpy(np.stack([p for p, _ in expected[split]])))
        assert data.labels.tolist() == [label for _, label in expected[split]]  # c is 2 in test


def test_training_maps_the_store_and_samples_batches_without_copying(tmp_path):
    store = tmp_path / "digits"
    prepare("digits", "--out", str(store))
    cfg = load_config(None, [f"data.name=store:{store}", "data.val_size=137"])
    splits = load_splits(cfg.data)
    in_ram = load_splits(load_config(None, ["data.val_size=137"]).data)
    assert isinstance(splits.train.images, IndexedImages) and splits.train.mapped
    for name in ("train", "val", "test"):  # the same split of the same images
        ours, theirs = getattr(splits, name), getattr(in_ram, name)
        assert torch.equal(ours.images[:], theirs.images) and torch.equal(ours.labels,
                                                                           theirs.labels)
    a = BatchSampler(splits.train.images, 16, torch.device("cpu"), seed=3)
    b = BatchSampler(in_ram.train.images, 16, torch.device("cpu"), seed=3)
    assert torch.equal(a()[0], b()[0])
    overrides = [f"data.name=store:{store}", "data.val_size=137", "model.blocks=2",
                 "model.patch_size=2", "train.steps=4", "train.init_batch_size=200",
                 "log.num_samples=4", f"log.out_dir={tmp_path / 'run'}"]
    assert train(load_config(None, overrides), show_progress=False)["step"] == 4
