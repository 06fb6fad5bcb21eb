"""Every mistake a user can make ends in one ``error:`` line and exit status 2.

Each case runs a real command line and checks: status 2, exactly one stderr line starting
``error:`` that names the problem, no traceback, no file changed in an existing run folder,
and nothing left behind beside the case's own damaged inputs. Damaged data, configs,
checkpoints and embeddings are small generated files.
"""

import hashlib
import io
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from mixerflow import load_config, train
from mixerflow.cli import main
from mixerflow.training import distributed
from mixerflow.training.lifecycle import RunLock
from support import QUICK, QUICKSTARTS, ROOT, mnist_files

TRAIN_IN = ["train", *QUICK]  # a case that names its own run folder
TRAIN = [*TRAIN_IN, "log.out_dir={tmp}/run"]
CKPT = "{world}/run/checkpoint.pt"
RESUME_COPY = [*TRAIN_IN, "--resume", "log.out_dir={tmp}/copy", "train.steps=40"]  # of tmp/copy


class Case(NamedTuple):
    argv: list[str]
    message: str  # part of the error line; {tmp} and {world} are filled in
    make: Callable | None = None  # make(tmp, world, monkeypatch) writes the damaged inputs
    cwd: str | None = None  # the working directory (default: the repository)


# ---------------------------------------------------------------- damaged inputs, made small


def npz_set(data, labels=None, test=None, keys=("data", "labels"), garbled=False) -> Callable:
    """train.npz (and test.npz: ``test`` or the same) under tmp/npz; ``garbled``: train.npz
    cut to half its bytes."""
    def make(tmp, world, monkeypatch):
        (tmp / "npz").mkdir()
        n = len(data)
        for split, rows in (("train", data), ("test", data if test is None else test)):
            arrays = {keys[0]: rows, keys[1]: np.arange(n) % 3 if labels is None else labels}
            np.savez(tmp / "npz" / f"{split}.npz", **arrays)
        if garbled:
            train = tmp / "npz" / "train.npz"
            train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    return make


def garbage(relative: str, content: bytes = b"this is not what it claims to be") -> Callable:
    def make(tmp, world, monkeypatch):
        (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp / relative).write_bytes(content)
    return make


def png_claiming(width: int, height: int) -> bytes:
    """A small grayscale PNG whose header announces ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's first fields, after its type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def image_folder(damage: str) -> Callable:
    """tmp/images/{train,test}/{a,b}/0.png, 4x4 grayscale, with one kind of damage."""
    def make(tmp, world, monkeypatch):
        root = tmp / "images"
        for split in ("train", "test"):
            for cls in ("a", "b"):
                (root / split / cls).mkdir(parents=True)
                for i in range(20):
                    Image.new("L", (4, 4), 9 * i).save(root / split / cls / f"{i}.png")
        if damage == "empty class":
            for png in (root / "train" / "b").iterdir():
                png.unlink()
        elif damage == "corrupt png":
            (root / "train" / "b" / "3.png").write_bytes(b"\x89PNG broken")
        elif damage == "truncated png":
            png = root / "test" / "a" / "5.png"
            png.write_bytes(png.read_bytes()[:30])
        elif damage == "mixed modes":
            Image.new("RGB", (4, 4)).save(root / "test" / "b" / "x.png")
        elif damage == "mixed sizes":
            Image.new("L", (6, 6)).save(root / "train" / "a" / "x.png")
        elif damage == "transparent":
            Image.new("LA", (4, 4), (9, 0)).save(root / "train" / "a" / "x.png")
        elif damage == "palette with transparency":
            Image.new("P", (4, 4), 0).save(root / "train" / "a" / "x.png", transparency=0)
        elif damage in ("float pixels", "32-bit pixels"):
            mode, dtype = {"float pixels": ("F", np.float32), "32-bit pixels": ("I", np.int32)}[
                damage]
            Image.fromarray(np.full((4, 4), 70000, dtype), mode).save(root / "test" / "a" / "x.tif")
        elif damage == "decompression bomb":
            (root / "train" / "b" / "x.png").write_bytes(png_claiming(20000, 20000))
        elif damage == "class only in test":
            (root / "test" / "c").mkdir()
            Image.new("L", (4, 4)).save(root / "test" / "c" / "0.png")
        elif damage == "no test split":
            for png in (root / "test").rglob("*.png"):
                png.unlink()
            for folder in sorted((root / "test").rglob("*"), reverse=True) + [root / "test"]:
                folder.rmdir()
    return make


def users_folder(tmp, world, monkeypatch):
    """tmp/home: a folder of the user's own files (and the working directory of some cases)."""
    (tmp / "home").mkdir()
    (tmp / "home" / "notes.txt").write_text("my notes")
    (tmp / "home" / "config.yaml").write_text("mine: true\n")


def checkpoint_named(name: str) -> Callable:
    """The world's checkpoint copied to tmp/NAME (a name a derived output could take)."""
    def make(tmp, world, monkeypatch):
        (tmp / name).write_bytes((world / "run" / "checkpoint.pt").read_bytes())
    return make


def run_copy(tmp, world, monkeypatch):
    """tmp/copy: the world's run folder copied whole (its config.yaml names the original)."""
    shutil.copytree(world / "run", tmp / "copy")


def npz_counts(train: int, test: int) -> Callable:
    """tmp/npz with ``train`` and ``test`` blank 4x4 RGB images (either may be none)."""
    def make(tmp, world, monkeypatch):
        (tmp / "npz").mkdir()
        for split, count in (("train", train), ("test", test)):
            np.savez(tmp / "npz" / f"{split}.npz", data=np.zeros((count, 48), np.uint8),
                     labels=np.zeros(count, np.int64))
    return make


def both(*makes: Callable) -> Callable:
    def make(tmp, world, monkeypatch):
        for each in makes:
            each(tmp, world, monkeypatch)
    return make


def linked(link: str, target: str, hard: bool = False) -> Callable:
    """tmp/``link`` replaced by a link to tmp/``target`` (symbolic, relative; or hard)."""
    def make(tmp, world, monkeypatch):
        path = tmp / link
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        if hard:
            path.hardlink_to(tmp / target)
        else:
            path.symlink_to(os.path.relpath(tmp / target, path.parent))
    return make


def checkpoint_reading(name: str, ckpt: str = "bad.pt") -> Callable:
    """tmp/``ckpt`` (a copy of the world's checkpoint, or the one there) whose config names
    the data set ``name`` ({tmp} filled in)."""
    def make(tmp, world, monkeypatch):
        source = tmp / ckpt if (tmp / ckpt).exists() else world / "run" / "checkpoint.pt"
        payload = torch.load(source, weights_only=True)
        payload["config"]["data"]["name"] = name.format(tmp=tmp)
        torch.save(payload, tmp / ckpt)
    return make


def damaged_run(damage: str) -> Callable:
    """tmp/copy: a copy of the world's run folder, one of its files damaged."""
    def make(tmp, world, monkeypatch):
        run_copy(tmp, world, monkeypatch)
        copy = tmp / "copy"
        metrics = copy / "metrics.jsonl"
        if damage == "metrics not text":
            metrics.write_bytes(b"\xff\xfe" + metrics.read_bytes())
        elif damage == "metrics line not a record":
            metrics.write_text("the run went well\n" + metrics.read_text())
        elif damage == "metrics step as text":
            metrics.write_text('{"step": "ten", "train_bpd": 3.0}\n' + metrics.read_text())
        elif damage.endswith(" as a folder"):
            entry = copy / damage.removesuffix(" as a folder")
            entry.unlink(missing_ok=True)
            entry.mkdir()
            (entry / "kept.txt").write_text("mine")
        elif damage == "wandb as a file":
            (copy / "wandb").write_text("mine")
    return make


def checkpoint_in_copy(change: Callable[[dict], None]) -> Callable:
    """tmp/copy (the world's run) whose checkpoint has ``change`` applied."""
    def make(tmp, world, monkeypatch):
        run_copy(tmp, world, monkeypatch)
        payload = torch.load(tmp / "copy" / "checkpoint.pt", weights_only=True)
        change(payload)
        torch.save(payload, tmp / "copy" / "checkpoint.pt")
    return make


def npz_and(then: Callable) -> Callable:
    def make(tmp, world, monkeypatch):
        npz_set(np.zeros((40, 12), np.uint8))(tmp, world, monkeypatch)
        then(tmp, world, monkeypatch)
    return make


def offline_download(tmp, world, monkeypatch):
    import torchvision

    def refuse(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://example/, "
                           "got:\n<urlopen error [Errno -2] Name or service not known>")
    monkeypatch.setattr(torchvision.datasets, "MNIST", refuse)


def store_copy(damage: str) -> Callable:
    """A copy of the world's digits store under tmp/store, damaged one way."""
    def make(tmp, world, monkeypatch):
        store = tmp / "store"
        store.mkdir()
        for file in (world / "store").iterdir():
            (store / file.name).write_bytes(file.read_bytes())
        labels = np.load(store / "test_labels.npy")
        meta = json.loads((store / "meta.json").read_text())
        if damage == "levels":
            (store / "meta.json").write_text(json.dumps({**meta, "num_levels": 256}))
        elif damage == "changed labels":
            np.save(store / "test_labels.npy", labels[::-1].copy())
        elif damage == "short labels":
            np.save(store / "test_labels.npy", labels[:-1])
        elif damage == "foreign format":
            (store / "meta.json").write_text(json.dumps({**meta, "format": "other"}))
        elif damage == "meta not json":
            (store / "meta.json").write_text("{ broken")
        elif damage == "images missing":
            (store / "train_images.npy").unlink()
    return make


def checkpoint_copy(change: Callable[[dict], None], name: str = "bad.pt") -> Callable:
    """tmp/``name``: the world's checkpoint with ``change`` applied to its dict."""
    def make(tmp, world, monkeypatch):
        payload = torch.load(world / "run" / "checkpoint.pt", weights_only=True)
        change(payload)
        torch.save(payload, tmp / name)
    return make


def checkpoint_bytes(cut: Callable[[bytes], bytes]) -> Callable:
    def make(tmp, world, monkeypatch):
        (tmp / "bad.pt").write_bytes(cut((world / "run" / "checkpoint.pt").read_bytes()))
    return make


def unsafe_checkpoint(tmp, world, monkeypatch):
    torch.save({"format": "mixerflow-checkpoint-v1", "payload": Path("/")}, tmp / "bad.pt")


def drop(*keys: str) -> Callable[[dict], None]:
    def change(payload: dict) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return change


def put(value, *keys: str) -> Callable[[dict], None]:
    def change(payload: dict) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


def embeddings_copy(change: Callable[[dict], None] | None = None,
                    cut: Callable[[bytes], bytes] | None = None) -> Callable:
    """tmp/e.npz: the world's embeddings, their arrays changed or their bytes cut."""
    def make(tmp, world, monkeypatch):
        source = world / "embeddings.npz"
        if cut is not None:
            (tmp / "e.npz").write_bytes(cut(source.read_bytes()))
            return
        with np.load(source) as stored:
            arrays = {key: stored[key] for key in stored.files}
        change(arrays)
        np.savez(tmp / "e.npz", **arrays)
    return make


def config_file(content: bytes) -> Callable:
    return garbage("c.yaml", content)


def ragged_rows(arrays: dict) -> None:
    arrays["train_y"] = arrays["train_y"][:-1]


def no_data_settings(arrays: dict) -> None:
    settings = json.loads(str(arrays["settings"]))
    del settings["data"]
    arrays["settings"] = np.array(json.dumps(settings))


def data_settings(**changes) -> Callable[[dict], None]:
    def change(arrays: dict) -> None:
        settings = json.loads(str(arrays["settings"]))
        settings["data"].update(changes)
        arrays["settings"] = np.array(json.dumps(settings))
    return change


PIXELS = np.arange(30 * 48).reshape(30, 48) % 256  # 30 images of 3x4x4
CFG = ["train", "--config", "{tmp}/c.yaml", "--no-progress", "log.out_dir={tmp}/run"]
COMPARE = ["compare", "--out", "{tmp}/r", "--no-progress"]
BENCH = ["bench", "--config", "configs/quickstart.yaml", "--out", "{tmp}/r"]
NOT_ROOT = os.geteuid() != 0  # root writes into read-only folders

CASES = {
    # the command line itself
    "no command": Case([], "the following arguments are required: command"),
    "unknown command": Case(["fly"], "invalid choice: 'fly'"),
    "unknown flag": Case(["train", "--fast"], "unrecognized arguments: --fast"),
    "flag value not a number": Case(["sample", "--checkpoint", CKPT, "--n", "many"],
                                    "argument --n: invalid int value: 'many'"),
    "flag without its value": Case(["sample", "--checkpoint"],
                                   "argument --checkpoint: expected one argument"),
    "override on a command without config": Case(["sample", "--checkpoint", CKPT, "n=3"],
                                                 "unrecognized arguments: n=3"),
    # config keys and values
    "unknown key": Case([*TRAIN, "model.deep=3"], "unknown config key 'model.deep'"),
    "unknown section": Case([*TRAIN, "modle.blocks=3"], "unknown config key 'modle'"),
    "override without a value": Case([*TRAIN, "model.blocks="],
                                     "'model.blocks' must be an integer, got ''"),
    "integer as words": Case([*TRAIN, "model.blocks=three"],
                             "'model.blocks' must be an integer, got 'three'"),
    "zero blocks": Case([*TRAIN, "model.blocks=0"], "'model.blocks' must be at least 1"),
    "negative batch size": Case([*TRAIN, "train.batch_size=-5"],
                                "'train.batch_size' must be at least 1"),
    "zero steps": Case([*TRAIN, "train.steps=0"], "'train.steps' must be at least 1"),
    "unknown coupling": Case([*TRAIN, "model.coupling=cubic"],
                             "'model.coupling' must be one of affine, additive, rq-spline"),
    "unknown model kind": Case([*TRAIN, "model.kind=resnet"], "'model.kind' must be one of"),
    "attention width not a multiple of heads": Case(
        [*CFG, "model.width=10"], "'model.width' must be a multiple of model.heads (4); got 10",
        config_file(b"data: {name: digits}\nmodel: {kind: tarflow, patch_size: 2}\n")),
    "attention with a spline": Case(
        [*CFG, "model.coupling=rq-spline"], "must be affine for model.kind tarflow",
        config_file(b"data: {name: digits}\nmodel: {kind: tarflow, patch_size: 2}\n")),
    "jet split of an unknown kind": Case(
        [*CFG, "model.pattern=channels,rows"], "'model.pattern' must be one of channels, spatial",
        config_file(b"data: {name: digits}\nmodel: {kind: jet, patch_size: 2}\n")),
    "jet channel split of one value": Case(
        [*CFG, "model.patch_size=1"],
        "model.pattern: a channels coupling splits each patch's values, and patch_size 1 "
        "leaves 1",
        config_file(b"data: {name: digits}\nmodel: {kind: jet}\n")),
    "jet token mixing unknown": Case(
        [*CFG, "model.token_mixing=conv"], "'model.token_mixing' must be one of attention, mlp",
        config_file(b"data: {name: digits}\nmodel: {kind: jet, patch_size: 2}\n")),
    "attention over a single patch": Case(
        [*CFG, "model.patch_size=8"], "leaves a single patch of the 8x8 image; attention needs",
        config_file(b"data: {name: digits}\nmodel: {kind: tarflow}\n")),
    "boolean as words": Case([*TRAIN, "model.shift=maybe"], "'model.shift' must be true or false"),
    "negative lr": Case([*TRAIN, "train.lr=-1"], "'train.lr' must be positive"),
    "infinite lr": Case([*TRAIN, "train.lr=.inf"], "'train.lr' must be a finite number"),
    "nan minutes": Case([*TRAIN, "train.max_minutes=.nan"],
                        "'train.max_minutes' must be a finite number"),
    "lr as words": Case([*TRAIN, "train.lr=fast"], "'train.lr' must be a number, got 'fast'"),
    "tiny init batch": Case([*TRAIN, "train.init_batch_size=1"],
                            "'train.init_batch_size' must be at least 32"),
    "unknown data set": Case([*TRAIN, "data.name=imagenet"], "'data.name' must be one of"),
    "unknown device": Case([*TRAIN, "train.device=tpu"], "'train.device' must be auto, cpu, cuda"),
    "device index not a number": Case([*TRAIN, "train.device=cuda:abc"],
                                      "'train.device' must be auto, cpu, cuda or cuda:N"),
    "unknown precision": Case([*TRAIN, "train.precision=fp8"], "'train.precision' must be one of"),
    "unknown wandb mode": Case([*TRAIN, "log.wandb=maybe"], "'log.wandb' must be one of"),
    "negative temperature": Case([*TRAIN, "log.temperature=-1"],
                                 "'log.temperature' must be at least 0"),
    "warm-up share of the whole budget": Case([*TRAIN, "train.warmup_fraction=1"],
                                              "'train.warmup_fraction' must lie in [0, 1)"),
    "zero threads": Case([*TRAIN, "train.threads=0"], "'train.threads' must be at least 1"),
    "negative weight decay": Case([*TRAIN, "train.weight_decay=-0.1"],
                                  "'train.weight_decay' must be at least 0"),
    "average that never moves": Case([*TRAIN, "train.ema=1"],
                                     "'train.ema' (the decay of the weights' moving average) "
                                     "must lie in (0, 1)"),
    "average with no memory": Case([*TRAIN, "train.ema=0"], "'train.ema' (the decay"),
    "unknown dequantization": Case([*TRAIN, "model.dequantization=learned"],
                                   "'model.dequantization' must be one of uniform, variational"),
    "dequantizer without width": Case([*TRAIN, "model.dequantization=variational",
                                       "model.dequant_hidden=0"],
                                      "'model.dequant_hidden' must be at least 1"),
    "dequantizer without couplings": Case([*TRAIN, "model.dequant_steps=0"],
                                          "'model.dequant_steps' must be at least 1"),
    "negative permutation seed": Case([*TRAIN, "data.permute_pixels=-1"],
                                      "'data.permute_pixels' must be a seed in 0.."),
    "resume with another permutation": Case([*TRAIN_IN, "--resume", "log.out_dir={world}/run",
                                             "data.permute_pixels=1"],
                                            "data.permute_pixels is 1 but"),
    "zero samples": Case([*TRAIN, "log.num_samples=0"], "'log.num_samples' must be at least 1"),
    "patch size that does not divide": Case([*TRAIN, "model.patch_size=3"],
                                            "patch_size 3 does not divide the image size 8x8"),
    "val split eats train": Case([*TRAIN, "data.val_size=5000"],
                                 "'data.val_size' (5000) must be below the 1437"),
    "absurd model": Case([*TRAIN, "model.blocks=10000000"],
                         "the model has about 211,080,000,000 parameters: training needs"),
    # config files
    "config file missing": Case(["train", "--config", "{tmp}/nope.yaml"], "not found"),
    "config not UTF-8": Case(CFG, "is not UTF-8 text", config_file(b"train:\n  lr: \xff\xfe\n")),
    "config is a list": Case([*CFG, "train.lr=0.1"], "must hold a mapping of sections",
                             config_file(b"- a\n- b\n")),
    "config not YAML": Case(CFG, "is not valid YAML", config_file(b"train: [\n")),
    "config runs python": Case(CFG, "is not valid YAML",
                               config_file(b"train: !!python/object/apply:os.system [ls]\n")),
    "config section not a mapping": Case(CFG, "'train'", config_file(b"train: 3\n")),
    "config is a folder": Case(["train", "--config", "{tmp}"], "is a folder"),
    # the run folder
    "run folder is a file": Case([*TRAIN_IN, "log.out_dir={tmp}/c.yaml"], "cannot use",
                                 config_file(b"")),
    "run folder under a file": Case([*TRAIN_IN, "log.out_dir={tmp}/c.yaml/run"], "cannot use",
                                    config_file(b"")),
    "run folder name too long": Case([*TRAIN_IN, "log.out_dir={tmp}/" + "r" * 300],
                                     "File name too long"),
    "existing run without --resume": Case([*TRAIN_IN, "log.out_dir={world}/run"],
                                          "already exists; pass --resume"),
    "resume with nothing to resume": Case([*TRAIN, "--resume"], "--resume: no checkpoint at"),
    "resume with another model": Case([*TRAIN_IN, "--resume", "log.out_dir={world}/run",
                                       "model.blocks=3"], "model.blocks is 3 but"),
    "resume with another batch size": Case([*TRAIN_IN, "--resume", "log.out_dir={world}/run",
                                            "train.batch_size=32"], "train.batch_size is 32 but"),
    "resume with another seed": Case([*TRAIN_IN, "--resume", "log.out_dir={world}/run",
                                      "train.seed=5", "train.steps=40"],
                                     "--resume: train.seed is 5 but"),
    "resume with other data": Case([*TRAIN_IN, "--resume", "log.out_dir={world}/run",
                                    "data.val_size=100"], "data.val_size is 100 but"),
    # data
    "data root missing": Case([*TRAIN, "data.name=mnist", "data.root={tmp}/nowhere"],
                              "train-images-idx3-ubyte[.gz] not found in"),
    "cifar10 missing": Case([*TRAIN, "data.name=cifar10", "data.root={tmp}"],
                            "CIFAR-10 not found"),
    "download offline": Case([*TRAIN, "data.name=mnist", "data.root={tmp}", "data.download=true"],
                             "could not download MNIST into", offline_download),
    "mnist truncated": Case([*TRAIN, "data.name=mnist", "data.root={tmp}", "data.val_size=1"],
                            "is truncated or corrupt", mnist_files("truncated")),
    "mnist not idx": Case([*TRAIN, "data.name=mnist", "data.root={tmp}", "data.val_size=1"],
                          "is not an idx file of unsigned bytes", mnist_files("not idx")),
    "mnist bad gzip": Case([*TRAIN, "data.name=mnist", "data.root={tmp}", "data.val_size=1"],
                           "cannot be read", mnist_files("bad gzip")),
    "mnist truncated gzip": Case([*TRAIN, "data.name=mnist", "data.root={tmp}",
                                  "data.val_size=1"], "cannot be read",
                                 mnist_files("truncated gzip")),
    "mnist labels and images differ": Case([*TRAIN, "data.name=mnist", "data.root={tmp}",
                                            "data.val_size=1"], "3 labels for 2 images",
                                           mnist_files("labels count")),
    "npz folder missing": Case([*TRAIN, "data.name=npz:{tmp}/npz"], "not found"),
    "npz float pixels": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=1"],
                             "pixel data are float64; expected integers",
                             npz_set(np.random.default_rng(0).random((30, 48)))),
    "npz pixels above 255": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=1"],
                                 "pixel values span 300..300; expected 0..255",
                                 npz_set(np.full((30, 48), 300, dtype=np.int16))),
    "npz negative pixels": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=1"],
                                "pixel values span -1..-1", npz_set(np.full((30, 48), -1))),
    "npz labels short": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=1"],
                             "expected one integer per", npz_set(PIXELS, labels=np.arange(3))),
    "npz labels float": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=1"],
                             "expected one integer per", npz_set(PIXELS, labels=np.ones(30) / 2)),
    "npz without data key": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=1"],
                                 "not an image .npz", npz_set(PIXELS, keys=("pixels", "labels"))),
    "npz rows not square images": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=1"],
                                       "rows of 50 values are not 3 x s x s images",
                                       npz_set(np.zeros((30, 50), dtype=np.uint8))),
    "npz splits of other shapes": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=1"],
                                       "train images are (3, 4, 4) but test images are (3, 2, 2)",
                                       npz_set(PIXELS, test=np.zeros((30, 12), np.uint8))),
    "npz truncated": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=1"],
                          "not an image .npz", npz_set(PIXELS, garbled=True)),
    "image folder missing": Case([*TRAIN, "data.name=folder:{tmp}/images"], "not found"),
    "image folder empty class": Case([*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
                                     "Found no valid file", image_folder("empty class")),
    "image folder corrupt png": Case([*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
                                     "is not a readable image", image_folder("corrupt png")),
    "image folder truncated png": Case([*TRAIN, "data.name=folder:{tmp}/images",
                                        "data.val_size=1"], "is not a readable image",
                                       image_folder("truncated png")),
    "image folder mixed modes": Case([*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
                                     "but the first image is (1, 4, 4)",
                                     image_folder("mixed modes")),
    "image folder mixed sizes": Case([*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
                                     "but the first image is (1, 4, 4)",
                                     image_folder("mixed sizes")),
    "image folder class only in test": Case([*TRAIN, "data.name=folder:{tmp}/images",
                                             "data.val_size=1"], "has classes that train/ lacks: c",
                                            image_folder("class only in test")),
    "image folder without test": Case([*TRAIN, "data.name=folder:{tmp}/images",
                                       "data.val_size=1"], "test", image_folder("no test split")),
    "store not prepared": Case([*TRAIN, "data.name=store:{tmp}/nowhere"],
                               "not a prepared store"),
    "store short labels": Case([*TRAIN, "data.name=store:{tmp}/store"],
                               "test files do not match meta.json", store_copy("short labels")),
    "store foreign format": Case([*TRAIN, "data.name=store:{tmp}/store"],
                                 "is not a mixerflow-store-v1 store", store_copy("foreign format")),
    "store meta not json": Case([*TRAIN, "data.name=store:{tmp}/store"], "meta.json",
                                store_copy("meta not json")),
    "store images missing": Case([*TRAIN, "data.name=store:{tmp}/store"], "train_images.npy",
                                 store_copy("images missing")),
    "imagenet not prepared": Case([*TRAIN, "data.name=imagenet64", "data.root={tmp}"],
                                  "is read from a prepared store at"),
    # checkpoints
    # class conditioning
    "class-conditional on data of one class": Case(
        [*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=4", "train.init_batch_size=32",
         "model.class_conditional=true"],
        "has no labels of two or more classes",
        npz_set(np.zeros((50, 192), np.uint8), labels=np.zeros(50, np.int64))),
    "label drop of an unconditional model": Case(
        [*TRAIN, "model.label_drop=0.2"], "'model.label_drop' applies to class-conditional"),
    "label drop of one": Case([*TRAIN, "model.class_conditional=true", "model.label_drop=1"],
                              "'model.label_drop' must lie in [0, 1)"),
    "class from an unconditional model": Case(
        ["sample", "--checkpoint", CKPT, "--class", "3", "--out", "{tmp}/s.png"],
        "holds an unconditional model"),
    "guidance without a class": Case(["sample", "--checkpoint", CKPT, "--guidance", "2"],
                                     "--guidance has no effect without --class"),
    "negative guidance": Case(["sample", "--checkpoint", CKPT, "--class", "all",
                               "--guidance", "-1"], "--guidance must be a finite number"),
    "classify with an unconditional model": Case(["classify", "--checkpoint", CKPT],
                                                 "only a class-conditional one classifies"),
    "noise scale without noisy images": Case(
        [*TRAIN, "model.noise_std=0.1"],
        "'model.noise_std' applies to model.dequantization: gaussian only"),
    "noise scale of zero": Case([*TRAIN, "model.dequantization=gaussian", "model.noise_std=0"],
                                "'model.noise_std' must be a positive number"),
    "denoising a model of dequantized images": Case(
        ["sample", "--checkpoint", CKPT, "--denoise", "--out", "{tmp}/s.png"],
        "was trained on dequantized images"),
    "checkpoint with classes its config lacks": Case(
        ["sample", "--checkpoint", "{tmp}/bad.pt"], "num_classes 10 does not fit",
        checkpoint_copy(put(10, "num_classes"))),
    "checkpoint missing": Case(["sample", "--checkpoint", "{tmp}/gone.pt"], "not found"),
    "checkpoint is text": Case(["sample", "--checkpoint", "{tmp}/bad.pt"],
                               "is corrupt or not a torch file", garbage("bad.pt")),
    "checkpoint empty": Case(["evaluate", "--checkpoint", "{tmp}/bad.pt"],
                             "is corrupt or not a torch file", garbage("bad.pt", b"")),
    "checkpoint truncated": Case(["evaluate", "--checkpoint", "{tmp}/bad.pt"],
                                 "is corrupt or not a torch file",
                                 checkpoint_bytes(lambda data: data[: len(data) // 2])),
    "checkpoint unsafe": Case(["sample", "--checkpoint", "{tmp}/bad.pt"],
                              "is not a mixerflow checkpoint: it holds Python objects",
                              unsafe_checkpoint),
    "checkpoint of another format": Case(["sample", "--checkpoint", "{tmp}/bad.pt"],
                                         "is not a mixerflow checkpoint",
                                         checkpoint_copy(put("mixerflow-checkpoint-v0", "format"))),
    "checkpoint without weights": Case(["sample", "--checkpoint", "{tmp}/bad.pt"],
                                       "lacks 'model'", checkpoint_copy(drop("model"))),
    "checkpoint without config": Case(["embed", "--checkpoint", "{tmp}/bad.pt"],
                                      "lacks 'config'", checkpoint_copy(drop("config"))),
    "checkpoint missing a tensor": Case(["sample", "--checkpoint", "{tmp}/bad.pt"],
                                        "weights do not fit its model",
                                        checkpoint_copy(lambda p: p["model"].popitem())),
    "checkpoint with a wrong shape": Case(["evaluate", "--checkpoint", "{tmp}/bad.pt"],
                                          "weights do not fit its model",
                                          checkpoint_copy(put([3, 8, 8], "image_shape"))),
    "checkpoint config tampered": Case(["sample", "--checkpoint", "{tmp}/bad.pt"],
                                       "'model.blocks' must be an integer",
                                       checkpoint_copy(put("many", "config", "model", "blocks"))),
    "checkpoint levels tampered": Case(["sample", "--checkpoint", "{tmp}/bad.pt"], "num_levels",
                                       checkpoint_copy(put("17", "num_levels"))),
    "resume from a damaged checkpoint": Case([*TRAIN_IN, "--resume", "log.out_dir={tmp}"],
                                             "lacks 'optimizer'",
                                             checkpoint_copy(drop("optimizer"), "checkpoint.pt")),
    "checkpoint data moved": Case(["evaluate", "--checkpoint", "{tmp}/bad.pt"], "not found",
                                  checkpoint_copy(put("npz:/nowhere", "config", "data", "name"))),
    # sample, evaluate, embed
    "sample zero": Case(["sample", "--checkpoint", CKPT, "--n", "0"], "--n must be at least 1"),
    "sample negative": Case(["sample", "--checkpoint", CKPT, "--n", "-3"],
                            "--n must be at least 1, got -3"),
    "sample batch zero": Case(["sample", "--checkpoint", CKPT, "--batch-size", "0"],
                              "--batch-size must be at least 1, got 0"),
    "negative sample temperature": Case(["sample", "--checkpoint", CKPT, "--temperature", "-1"],
                                        "--temperature must be at least 0"),
    "temperature as words": Case(["sample", "--checkpoint", CKPT, "--temperature", "warm"],
                                 "--temperature must be comma-separated numbers"),
    "temperature repeated": Case(["sample", "--checkpoint", CKPT, "--temperature", "1,1"],
                                 "--temperature must list distinct numbers"),
    "reconstruct zero": Case(["sample", "--checkpoint", CKPT, "--reconstruct", "0"],
                             "--reconstruct must be at least 1"),
    "reconstruct more than the test split": Case(
        ["sample", "--checkpoint", CKPT, "--out", "{tmp}/s.png", "--reconstruct", "100000"],
        "asked for 100000 test images but the test split has 360"),
    "interpolations past the test split": Case(
        ["sample", "--checkpoint", CKPT, "--out", "{tmp}/s.png", "--interpolate", "1000"],
        "asked for 2000 test images but the test split has 360"),
    "embed layer as words": Case(["embed", "--checkpoint", CKPT, "--layer", "deepest"],
                                 "layer 'deepest'"),
    "one interpolation step": Case(["sample", "--checkpoint", CKPT, "--interpolate", "1",
                                    "--interpolation-steps", "1"],
                                   "--interpolation-steps must be at least 2"),
    "sample out under a file": Case(["sample", "--checkpoint", CKPT, "--out",
                                     "{tmp}/c.yaml/grid.png"], "cannot write", config_file(b"")),
    "sample out is a folder": Case(["sample", "--checkpoint", CKPT, "--out", "{tmp}"],
                                   "it is a folder"),
    "sample device unknown": Case(["sample", "--checkpoint", CKPT, "--device", "gpu"],
                                  "--device must be"),
    "evaluate batch negative": Case(["evaluate", "--checkpoint", CKPT, "--batch-size", "-5"],
                                    "--batch-size must be at least 1, got -5"),
    "evaluate no draws": Case(["evaluate", "--checkpoint", CKPT, "--samples", "0"],
                              "--samples must be at least 1, got 0"),
    "evaluate unknown split": Case(["evaluate", "--checkpoint", CKPT, "--split", "dev"],
                                   "argument --split: invalid choice: 'dev'"),
    "evaluate device index not a number": Case(["evaluate", "--checkpoint", CKPT, "--device",
                                                "cuda:x"], "--device must be"),
    "embed batch zero": Case(["embed", "--checkpoint", CKPT, "--batch-size", "0"],
                             "--batch-size must be at least 1"),
    "embed max train zero": Case(["embed", "--checkpoint", CKPT, "--max-train", "0"],
                                 "--max-train must be at least 1"),
    "embed layer past the last block": Case(["embed", "--checkpoint", CKPT, "--layer", "block:9"],
                                            "layer 'block:9': choose z or block:k with k from 1"),
    "embed layer of the other model": Case(["embed", "--checkpoint", CKPT, "--layer", "level:1"],
                                           "layer 'level:1'"),
    "embed unknown pool": Case(["embed", "--checkpoint", CKPT, "--pool", "per_level"],
                               "pool 'per_level': MixerFlow pools are none, mean_patches"),
    "embed out under a file": Case(["embed", "--checkpoint", CKPT, "--out", "{tmp}/c.yaml/e.npz"],
                                   "cannot write", config_file(b"")),
    # embeddings and probes
    "embeddings missing": Case(["probe", "--embeddings", "{tmp}/none.npz"], "not found"),
    "embeddings not npz": Case(["probe", "--embeddings", "{tmp}/e.npz"], "is corrupt",
                               garbage("e.npz")),
    "embeddings truncated": Case(["probe", "--embeddings", "{tmp}/e.npz"], "is corrupt",
                                 embeddings_copy(cut=lambda data: data[: len(data) * 2 // 3])),
    "embeddings without test labels": Case(["probe", "--embeddings", "{tmp}/e.npz"],
                                           "lacks test_y", embeddings_copy(drop("test_y"))),
    "embeddings rows and labels differ": Case(["probe", "--embeddings", "{tmp}/e.npz"],
                                              "train_x has 1300 rows but train_y has 1299",
                                              embeddings_copy(ragged_rows)),
    "embeddings settings damaged": Case(["probe", "--embeddings", "{tmp}/e.npz"], "settings",
                                        embeddings_copy(put(np.array("{ broken"), "settings"))),
    "pixel baseline without data settings": Case(
        ["probe", "--embeddings", "{tmp}/e.npz", "--baseline", "pixels"],
        "does not say which data it embeds", embeddings_copy(no_data_settings)),
    "embeddings name data that does not load": Case(
        ["probe", "--embeddings", "{tmp}/e.npz", "--baseline", "pixels"],
        "names data that does not load: unknown config key 'data.colour'",
        embeddings_copy(data_settings(colour=1))),
    "embeddings of data that moved": Case(
        ["probe", "--embeddings", "{tmp}/e.npz", "--baseline", "pixels"],
        "/nowhere/train.npz not found", embeddings_copy(data_settings(name="npz:/nowhere"))),
    "probe json is a folder": Case(["probe", "--embeddings", "{world}/embeddings.npz", "--json",
                                    "{tmp}"], "it is a folder"),
    "probe iterations zero": Case(["probe", "--embeddings", "{world}/embeddings.npz",
                                   "--max-iter", "0"], "--max-iter must be at least 1"),
    "probe json under a file": Case(["probe", "--embeddings", "{world}/embeddings.npz", "--json",
                                     "{tmp}/c.yaml/p.json"], "cannot write", config_file(b"")),
    # compare, bench, campaign
    "compare seeds as words": Case([*COMPARE, "--seeds", "one"],
                                   "--seeds must be comma-separated integers"),
    "compare seeds repeated": Case([*COMPARE, "--seeds", "1,1"], "--seeds must list distinct"),
    "compare negative minutes": Case([*COMPARE, "--minutes", "-1"],
                                     "--minutes must be positive"),
    "compare zero steps": Case([*COMPARE, "--steps", "0"], "--steps must be at least 1"),
    "compare minutes and steps": Case([*COMPARE, "--steps", "5", "--minutes", "1"],
                                      "give --minutes or --steps, not both"),
    "compare config missing": Case([*COMPARE, "--model", "configs/quickstart.yaml", "--model",
                                    "{tmp}/nope.yaml"], "not found"),
    "compare one model": Case([*COMPARE, "--model", "configs/quickstart.yaml"],
                              "compare needs at least two --model configs"),
    "compare a model that cannot be matched": Case(
        [*COMPARE, "--model", "{tmp}/c.yaml", "--model", "configs/quickstart_glow.yaml"],
        "even the narrowest glow has more than 644 parameters",
        config_file(b"data: {name: digits}\nmodel: {patch_size: 4, channel_hidden: 1, "
                    b"patch_hidden: 1, blocks: 1, hidden_layers: 0}\n")),
    "compare over runs of other settings": Case(
        [*COMPARE, "--steps", "5"], "holds a run with other settings",
        garbage("r/runs/quickstart_seed0.yaml",
                b"data: {name: digits}\nmodel: {blocks: 99}\ntrain: {}\nlog: {}\n")),
    "compare report under a file": Case(["compare", "--steps", "2", "--out", "{tmp}/c.yaml/r"],
                                        "cannot write", config_file(b"")),
    "compare override of no model here": Case([*COMPARE, "model.deep=3"],
                                              "unknown config key 'model.deep'"),
    "bench override of another kind": Case([*BENCH, "model.levels=2"],
                                           "config key 'model.levels' fits none of the models "
                                           "here (mixerflow)"),
    "glow key in a mixerflow config": Case([*TRAIN, "model.levels=2"],
                                           "config key 'model.levels' belongs to model.kind "
                                           "glow, not mixerflow"),
    "learned prior on a mixerflow": Case([*TRAIN, "model.learned_prior=true"],
                                         "config key 'model.learned_prior' belongs to "
                                         "model.kind glow, not mixerflow"),
    "learned prior as words": Case(["train", "--config", "configs/quickstart_glow.yaml",
                                    "log.out_dir={tmp}/run", "model.learned_prior=2"],
                                   "'model.learned_prior' must be true or false"),
    "mixerflow key in a glow config": Case(["train", "--config", "configs/quickstart_glow.yaml",
                                            "log.out_dir={tmp}/run", "model.patch_size=2"],
                                           "belongs to model.kind mixerflow / tarflow / jet, "
                                           "not glow"),
    "old name of coupling_layers": Case([*TRAIN, "model.couplings=2"],
                                        "config key 'model.couplings' belongs to model.kind "
                                        "jet, not mixerflow"),
    "bench sizes too small": Case([*BENCH, "--sizes", "1"],
                                  "--sizes must list image sides of at least 2"),
    "bench sizes as words": Case([*BENCH, "--sizes", "big"],
                                 "--sizes must be comma-separated integers"),
    "bench unknown precision": Case([*BENCH, "--precision", "fp8"],
                                    "--precision takes a comma list"),
    "bench unknown mode": Case([*BENCH, "--modes", "fast"], "--modes takes a comma list"),
    "bench zero threads": Case([*BENCH, "--threads", "0"], "--threads must be at least 1"),
    "bench zero timed steps": Case([*BENCH, "--timed-steps", "0"],
                                   "--timed-steps must be at least 1"),
    "bench device unknown": Case([*BENCH, "--device", "gpu"], "--device must be"),
    "bench config missing": Case(["bench", "--config", "{tmp}/nope.yaml", "--out", "{tmp}/r"],
                                 "not found"),
    "bench report under a file": Case(["bench", "--config", "configs/quickstart.yaml", "--out",
                                       "{tmp}/c.yaml/r"], "cannot write", config_file(b"")),
    "campaign unknown part": Case(["campaign", "--parts", "train"], "--parts takes a comma list"),
    "campaign zero minutes": Case(["campaign", "--minutes", "0"], "--minutes must be positive"),
    # outputs that would replace an input or the user's files
    "sample over its checkpoint": Case(["sample", "--checkpoint", CKPT, "--out", CKPT],
                                       "would write over the checkpoint"),
    "sample grid named over the checkpoint": Case(
        ["sample", "--checkpoint", "{tmp}/g_t1.png", "--out", "{tmp}/g.png", "--temperature",
         "0.5,1"], "--out {tmp}/g_t1.png would write over the checkpoint",
        checkpoint_named("g_t1.png")),
    "sample npy over the checkpoint": Case(
        ["sample", "--checkpoint", "{tmp}/s.npy", "--out", "{tmp}/s.png", "--npy"],
        "would write over the checkpoint", checkpoint_named("s.npy")),
    "sample reconstruction over the checkpoint": Case(
        ["sample", "--checkpoint", "{tmp}/s_reconstruct.png", "--out", "{tmp}/s.png",
         "--reconstruct", "4"], "would write over the checkpoint",
        checkpoint_named("s_reconstruct.png")),
    "sample out not a png": Case(["sample", "--checkpoint", CKPT, "--out", "{tmp}/grid.jpg"],
                                 "names the PNG grid; end its name in .png"),
    "sample out empty": Case(["sample", "--checkpoint", CKPT, "--out", ""], "--out is empty"),
    "sample out with a literal tilde": Case(["sample", "--checkpoint", CKPT, "--out",
                                             "~/grid.png"], "holds an unexpanded ~"),
    "sample out with an unset variable": Case(["sample", "--checkpoint", CKPT, "--out",
                                               "$OUT/grid.png"], "holds an unexpanded $"),
    "embed over its checkpoint": Case(["embed", "--checkpoint", CKPT, "--out", CKPT],
                                      "would write over the checkpoint"),
    "embed out empty": Case(["embed", "--checkpoint", CKPT, "--out", ""], "--out is empty"),
    "embed out with an unset variable": Case(["embed", "--checkpoint", CKPT, "--out",
                                              "${{RUNS}}/e.npz"], "holds an unexpanded $"),
    "probe json over its embeddings": Case(
        ["probe", "--embeddings", "{world}/embeddings.npz", "--json", "{world}/embeddings.npz"],
        "--json {world}/embeddings.npz would write over the embeddings"),
    "probe json empty": Case(["probe", "--embeddings", "{world}/embeddings.npz", "--json", ""],
                             "--json is empty"),
    "compare into the working directory": Case([*COMPARE[:-3], "--out", ".", "--no-progress"],
                                               "--out is the working directory",
                                               users_folder, cwd="{tmp}/home"),
    "compare into the user's folder": Case([*COMPARE[:-3], "--out", "{tmp}/home",
                                            "--no-progress"],
                                           "did not write (config.yaml, notes.txt)",
                                           users_folder),
    "compare out empty": Case([*COMPARE[:-3], "--out", ""], "--out is empty"),
    "compare out a literal tilde": Case([*COMPARE[:-3], "--out", "~"], "unexpanded ~"),
    "bench into the user's folder": Case([*BENCH[:-1], "{tmp}/home"], "did not write",
                                         users_folder),
    "bench into the working directory": Case([*BENCH[:-1], "."],
                                             "--out is the working directory", users_folder,
                                             cwd="{tmp}/home"),
    "campaign into the user's folder": Case(["campaign", "--smoke", "--out", "{tmp}/home"],
                                            "did not write", users_folder),
    "campaign out empty": Case(["campaign", "--smoke", "--out", ""], "--out is empty"),
    "train into the working directory": Case(
        ["train", *QUICK, "log.out_dir=."], "'log.out_dir' is the working directory",
        users_folder, cwd="{tmp}/home"),
    "train into the user's folder": Case(["train", *QUICK, "log.out_dir={tmp}/home"],
                                         "'log.out_dir' {tmp}/home holds files that",
                                         users_folder),
    "train into a data store": Case(["train", *QUICK, "log.out_dir={world}/store"],
                                    "holds files that mixerflow did not write"),
    "train out empty": Case(["train", *QUICK, "log.out_dir="], "'log.out_dir' is empty"),
    "train out with a literal tilde": Case(["train", *QUICK, "log.out_dir=~/runs/x"],
                                           "unexpanded ~"),
    "train into its data folder": Case(
        ["train", *QUICK, "data.name=npz:{tmp}/npz", "data.val_size=4",
         "log.out_dir={tmp}/npz"], "would write over the data (npz:{tmp}/npz)",
        npz_and(lambda tmp, world, monkeypatch: None)),
    "train inside its data folder": Case(
        ["train", *QUICK, "data.name=npz:{tmp}/npz", "data.val_size=4",
         "log.out_dir={tmp}/npz/run"], "would write over the data",
        npz_and(lambda tmp, world, monkeypatch: None)),
    "prepare out empty": Case(["prepare", "digits", "--out", ""], "--out is empty"),
    "prepare into its source folder": Case(
        ["prepare", "folder:{tmp}/images", "--out", "{tmp}/images/store"],
        "would write over the data (folder:{tmp}/images)", image_folder("none")),
    "prepare out with an unset variable": Case(["prepare", "digits", "--out", "$STORE"],
                                               "unexpanded $"),
    "resume a copied run through its saved config": Case(
        ["train", "--config", "{tmp}/copy/config.yaml", "--resume", "--no-progress",
         "train.steps=40"], "is the saved config of the run in {tmp}/copy, but its "
        "log.out_dir is {world}/run (a copied or moved run?)", run_copy),
    # settings that would be dropped without a word
    "config key written twice": Case(CFG, "c.yaml': key 'blocks' is written twice (line 3)",
                                     config_file(b"model:\n  blocks: 2\n  blocks: 6\n")),
    "config section written twice": Case(CFG, "key 'model' is written twice (line 3)",
                                         config_file(b"model:\n  blocks: 2\nmodel:\n  "
                                                     b"patch_size: 2\n")),
    "override given twice": Case([*TRAIN, "train.steps=3", "train.steps=5"],
                                 "train.steps given twice ('3' and '5'); give it once"),
    "data root given twice": Case([*TRAIN, "--data-root", "{tmp}", "data.root={tmp}/b"],
                                  "--data-root and data.root given twice"),
    "flag given twice": Case(["sample", "--checkpoint", CKPT, "--n", "2", "--n", "3"],
                             "--n is given twice; give it once"),
    "flag given twice, once abbreviated": Case(
        ["sample", "--checkpoint", CKPT, "--temp", "1", "--temperature", "0.5"],
        "--temperature is given twice (as --temp and --temperature)"),
    "compare budget given twice": Case([*COMPARE, "--steps", "1", "--steps", "2"],
                                       "--steps is given twice"),
    "image size for a set that keeps its size": Case(
        [*TRAIN, "data.image_size=8"], "'data.image_size' resizes image folders only; digits"),
    "download for a set never downloaded": Case(
        [*TRAIN, "data.download=true"], "'data.download' has no effect for digits"),
    "download for an npz folder": Case(
        [*TRAIN, "data.name=npz:{tmp}/npz", "data.download=true"],
        "has no effect for npz:{tmp}/npz", npz_and(lambda tmp, world, monkeypatch: None)),
    # numbers beyond what the libraries take, sizes far beyond the machine's memory
    "train seed negative": Case([*TRAIN, "train.seed=-1"], "'train.seed' must lie in 0.."),
    "train seed beyond 64 bits": Case([*TRAIN, "train.seed=100000000000000000000"],
                                      "'train.seed' must lie in 0.."),
    "permutation seed beyond 64 bits": Case([*TRAIN, "data.permute_pixels=" + "9" * 20],
                                            "'data.permute_pixels' must be a seed in 0.."),
    "sample seed beyond 64 bits": Case(["sample", "--checkpoint", CKPT, "--seed", "9" * 20],
                                       "--seed must lie in 0.."),
    "sample seed negative": Case(["sample", "--checkpoint", CKPT, "--seed", "-4"],
                                 "--seed must lie in 0.."),
    "samples beyond the memory": Case(["sample", "--checkpoint", CKPT, "--n", "10" * 7],
                                      "samples needs at least"),
    "interpolation beyond the memory": Case(
        ["sample", "--checkpoint", CKPT, "--interpolate", "2", "--interpolation-steps",
         "10" * 7, "--out", "{tmp}/s.png"], "interpolation steps needs at least"),
    "train batch beyond the memory": Case([*TRAIN, "train.batch_size=" + "10" * 7],
                                          "a batch of train.batch_size=10101010101010 images "
                                          "needs at least"),
    # too little data for what the settings ask
    "empty test split": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=4"],
                             "the test split holds no images", npz_counts(40, 0)),
    "empty train split": Case([*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=4"],
                              "the train split holds no images", npz_counts(0, 5)),
    "init batch beyond the train split": Case(
        [*TRAIN, "train.init_batch_size=5000"],
        "'train.init_batch_size' (5000) asks for more images than the 1300 training images"),
    "validation leaves too few to train on": Case(
        [*TRAIN, "data.val_size=1420"], "digits leaves 17 training images after "
        "data.val_size=1420 went to validation; a run needs at least 32"),
    # non-finite sampling and budget settings, a flag the command ignores
    "sample temperature nan": Case(["sample", "--checkpoint", CKPT, "--temperature", "nan"],
                                   "--temperature must list finite numbers"),
    "sample temperature infinite": Case(["sample", "--checkpoint", CKPT, "--temperature",
                                         "0.5,inf"], "--temperature must list finite numbers"),
    "compare minutes nan": Case([*COMPARE, "--minutes", "nan"],
                                "--minutes must be positive and finite, got nan"),
    "campaign minutes infinite": Case(["campaign", "--minutes", "inf"],
                                      "--minutes must be positive and finite, got inf"),
    "interpolation steps without interpolations": Case(
        ["sample", "--checkpoint", CKPT, "--interpolation-steps", "5", "--out", "{tmp}/s.png"],
        "--interpolation-steps has no effect without --interpolate"),
    "verify with a source beside it": Case(
        ["prepare", "digits", "--verify", "{world}/store"],
        "--verify checks a store and writes nothing; SOURCE would have no effect beside it"),
    "verify with an output beside it": Case(
        ["prepare", "--verify", "{world}/store", "--out", "{tmp}/s", "--data-root", "{tmp}"],
        "--out, --data-root would have no effect beside it"),
    "sample data root it never reads": Case(
        ["sample", "--checkpoint", CKPT, "--data-root", "{tmp}", "--out", "{tmp}/s.png"],
        "--data-root has no effect here: sample reads test images only for --reconstruct"),
    # prepare
    "prepare without source": Case(["prepare"], "prepare needs a SOURCE"),
    "prepare unknown source": Case(["prepare", "mnist10", "--out", "{tmp}/s"],
                                   "'data.name' must be one of"),
    "prepare imagenet without src": Case(["prepare", "imagenet32", "--data-root", "{tmp}"],
                                         "needs --src"),
    "prepare imagenet src missing": Case(["prepare", "imagenet32", "--src", "{tmp}/nowhere",
                                          "--out", "{tmp}/s"],
                                         "does not hold train_data_batch_*.npz"),
    "prepare folder without out": Case(["prepare", "folder:{tmp}/images"], "needs --out"),
    "prepare image size one": Case(["prepare", "folder:{tmp}/images", "--out", "{tmp}/s",
                                    "--image-size", "1"], "--image-size must be at least 2"),
    "prepare src for a source read in place": Case(["prepare", "digits", "--src", "{tmp}",
                                                    "--out", "{tmp}/s"],
                                                   "--src is for the sources prepared from"),
    "prepare image size for another source": Case(["prepare", "digits", "--out", "{tmp}/s",
                                                   "--image-size", "8"],
                                                  "--image-size resizes image folders only"),
    "prepare over an existing store": Case(["prepare", "digits", "--out", "{world}/store"],
                                           "already exists"),
    "prepare out under a file": Case(["prepare", "digits", "--out", "{tmp}/c.yaml/s"],
                                     "cannot write the store", config_file(b"")),
    "verify a changed store": Case(["prepare", "--verify", "{tmp}/store", "--no-progress"],
                                   "test_labels.npy does not match its sha256",
                                   store_copy("changed labels")),
    "verify a missing store": Case(["prepare", "--verify", "{tmp}/nowhere"],
                                   "not a prepared store"),
    # a data root that the data set (or the command) never reads
    "data root for the bundled digits": Case(
        [*TRAIN, "data.root={tmp}"], "config key 'data.root' (or --data-root) has no effect: "
        "digits is bundled with the code, not read from a folder"),
    "--data-root for the bundled digits": Case([*TRAIN, "--data-root", "{tmp}"],
                                               "(or --data-root) has no effect: digits is"),
    "data root for an npz folder": Case(
        [*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=4", "data.root={tmp}"],
        "has no effect: npz:{tmp}/npz names its own folder", npz_and(lambda *made: None)),
    "data root for an image folder": Case(
        [*TRAIN, "data.name=folder:{tmp}/images", "--data-root", "{tmp}"],
        "has no effect: folder:{tmp}/images names its own folder", image_folder("none")),
    "evaluate data root digits never reads": Case(
        ["evaluate", "--checkpoint", CKPT, "--data-root", "{tmp}"],
        "--data-root has no effect here: digits is bundled with the code"),
    "embed data root digits never reads": Case(
        ["embed", "--checkpoint", CKPT, "--data-root", "{tmp}", "--out", "{tmp}/e.npz"],
        "--data-root has no effect here: digits is bundled with the code"),
    "reconstruct with a data root digits never reads": Case(
        ["sample", "--checkpoint", CKPT, "--reconstruct", "4", "--data-root", "{tmp}", "--out",
         "{tmp}/s.png"], "--data-root has no effect here: digits is bundled with the code"),
    "probe data root without a baseline": Case(
        ["probe", "--embeddings", "{world}/embeddings.npz", "--data-root", "{tmp}"],
        "--data-root has no effect here: probe reads images only for --baseline pixels"),
    "pixel baseline with a data root digits never reads": Case(
        ["probe", "--embeddings", "{world}/embeddings.npz", "--baseline", "pixels",
         "--data-root", "{tmp}"], "--data-root has no effect here: digits is bundled"),
    "compare data root digits never reads": Case(
        [*COMPARE, "--steps", "2", "--data-root", "{tmp}"], "(or --data-root) has no effect"),
    "bench data root it never reads": Case([*BENCH, "--data-root", "{tmp}"],
                                           "bench times random images of the data's shape"),
    "campaign bench part with a data root": Case(
        ["campaign", "--parts", "bench", "--data-root", "{tmp}", "--out", "{tmp}/r"],
        "--data-root has no effect here: the bench part reads no data"),
    "prepare digits with a data root": Case(
        ["prepare", "digits", "--data-root", "{tmp}", "--out", "{tmp}/s"],
        "--data-root has no effect here: digits is bundled with the code"),
    "prepare imagenet with --out and a data root": Case(
        ["prepare", "imagenet32", "--src", "{tmp}", "--out", "{tmp}/s", "--data-root", "{tmp}"],
        "--data-root has no effect with --out: prepare imagenet32 reads --src and writes --out"),
    # the data changed since training, or the checkpoint names another kind
    "evaluate after the data changed shape": Case(
        ["evaluate", "--checkpoint", "{tmp}/bad.pt"], "the model takes (1, 8, 8) images of 17 "
        "levels but npz:{tmp}/npz gives (3, 4, 4) images of 256 levels (did the data change",
        both(npz_counts(200, 5), checkpoint_reading("npz:{tmp}/npz"))),
    "embed after the data changed shape": Case(
        ["embed", "--checkpoint", "{tmp}/bad.pt", "--out", "{tmp}/e.npz"],
        "gives (3, 4, 4) images of 256 levels",
        both(npz_counts(200, 5), checkpoint_reading("npz:{tmp}/npz"))),
    "reconstruct after the data changed shape": Case(
        ["sample", "--checkpoint", "{tmp}/bad.pt", "--reconstruct", "2", "--out", "{tmp}/s.png"],
        "gives (3, 4, 4) images", both(npz_counts(200, 5), checkpoint_reading("npz:{tmp}/npz"))),
    "interpolate after the data changed shape": Case(
        ["sample", "--checkpoint", "{tmp}/bad.pt", "--interpolate", "1", "--out", "{tmp}/s.png"],
        "gives (3, 4, 4) images", both(npz_counts(200, 5), checkpoint_reading("npz:{tmp}/npz"))),
    "evaluate after the data changed levels": Case(
        ["evaluate", "--checkpoint", "{tmp}/bad.pt"], "the model takes (1, 8, 8) images of 17 "
        "levels but store:{tmp}/store gives (1, 8, 8) images of 256 levels",
        both(store_copy("levels"), checkpoint_reading("store:{tmp}/store"))),
    "resume after the data changed shape": Case(
        ["train", "--config", "{tmp}/copy/config.yaml", "--resume", "--no-progress",
         "log.out_dir={tmp}/copy", "data.name=npz:{tmp}/npz", "train.steps=40"],
        "gives (3, 4, 4) images of 256 levels (did the data change since training?)",
        both(run_copy, npz_counts(200, 5), checkpoint_reading("npz:{tmp}/npz",
                                                             "copy/checkpoint.pt"))),
    "resume with another kind's config": Case(
        ["train", "--config", str(QUICKSTARTS["glow"]), "--no-progress", "--resume",
         "log.out_dir={world}/run", "train.steps=40"],
        "--resume: model.kind is 'glow' but {world}/run/checkpoint.pt was trained with "
        "'mixerflow'"),
    "checkpoint of one kind with another's settings": Case(
        ["evaluate", "--checkpoint", "{tmp}/bad.pt"], "its weights do not fit its model",
        checkpoint_copy(put("glow", "config", "model", "kind"))),
    "embed a checkpoint of another kind's settings": Case(
        ["embed", "--checkpoint", "{tmp}/bad.pt", "--out", "{tmp}/e.npz"],
        "its weights do not fit its model", checkpoint_copy(put("glow", "config", "model",
                                                                 "kind"))),
    # damaged run-folder files beside the checkpoint, fields of the wrong type in it
    "resume with a metrics log that is not text": Case(
        RESUME_COPY,
        "metrics.jsonl is damaged: it is not text", damaged_run("metrics not text")),
    "resume with a metrics line of someone else's": Case(
        RESUME_COPY,
        "metrics.jsonl is damaged: line 1 is not a record of ours",
        damaged_run("metrics line not a record")),
    "resume with a metrics step as text": Case(
        RESUME_COPY,
        "metrics.jsonl is damaged: line 1 is not a record of ours",
        damaged_run("metrics step as text")),
    "resume with the metrics log a folder": Case(
        RESUME_COPY,
        "metrics.jsonl is a folder where the run writes a file; move it aside",
        damaged_run("metrics.jsonl as a folder")),
    "resume with the samples a folder": Case(
        RESUME_COPY,
        "samples.png is a folder where the run writes a file",
        damaged_run("samples.png as a folder")),
    "resume with the results a folder": Case(
        RESUME_COPY,
        "results.json is a folder where the run writes a file",
        damaged_run("results.json as a folder")),
    "resume with the saved config a folder": Case(
        RESUME_COPY,
        "config.yaml is a folder where the run writes a file",
        damaged_run("config.yaml as a folder")),
    "resume with wandb a file": Case(
        RESUME_COPY,
        "wandb is a file where the run writes a folder", damaged_run("wandb as a file")),
    "resume from a checkpoint whose step is text": Case(
        RESUME_COPY,
        "is damaged: its 'step' is 'ten' (str); expected non-negative finite int",
        checkpoint_in_copy(put("ten", "step"))),
    "resume from a checkpoint whose step is negative": Case(
        RESUME_COPY,
        "its 'step' is -3 (int); expected non-negative", checkpoint_in_copy(put(-3, "step"))),
    "resume from a checkpoint whose time is negative": Case(
        RESUME_COPY,
        "its 'elapsed' is -5.0 (float); expected non-negative finite",
        checkpoint_in_copy(put(-5.0, "elapsed"))),
    "resume from a checkpoint whose time is infinite": Case(
        RESUME_COPY,
        "its 'elapsed' is inf (float)", checkpoint_in_copy(put(float("inf"), "elapsed"))),
    "resume from a checkpoint whose optimizer is a list": Case(
        RESUME_COPY,
        "its 'optimizer' is [] (list); expected dict", checkpoint_in_copy(put([], "optimizer"))),
    "resume from a checkpoint whose random state is text": Case(
        RESUME_COPY,
        "its 'rng' is 'seed' (str); expected Tensor", checkpoint_in_copy(put("seed", "rng"))),
    "checkpoint whose config is a list": Case(
        ["sample", "--checkpoint", "{tmp}/bad.pt"], "its 'config' is [1] (list); expected dict",
        checkpoint_copy(put([1], "config"))),
    "checkpoint whose weights are text": Case(
        ["evaluate", "--checkpoint", "{tmp}/bad.pt"], "its 'model' is 'weights' (str)",
        checkpoint_copy(put("weights", "model"))),
    "checkpoint whose levels are a boolean": Case(
        ["sample", "--checkpoint", "{tmp}/bad.pt"], "its 'num_levels' is True (bool)",
        checkpoint_copy(put(True, "num_levels"))),
    "checkpoint whose image shape is text": Case(
        ["embed", "--checkpoint", "{tmp}/bad.pt", "--out", "{tmp}/e.npz"],
        "its 'image_shape' is '1x8x8' (str); expected list",
        checkpoint_copy(put("1x8x8", "image_shape"))),
    # images of modes read wrongly before, and ones the decoder refuses
    "image folder with transparent pixels": Case(
        [*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
        "has transparent pixels (mode LA); mixerflow reads no alpha", image_folder("transparent")),
    "image folder palette with transparency": Case(
        [*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
        "has transparent pixels (mode RGBA)", image_folder("palette with transparency")),
    "image folder float pixels": Case(
        [*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
        "holds floating-point pixels (mode F); save it as an 8- or 16-bit image",
        image_folder("float pixels")),
    "image folder 32-bit pixels": Case(
        [*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
        "holds 32-bit integer pixels (mode I)", image_folder("32-bit pixels")),
    "image folder decompression bomb": Case(
        [*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
        "x.png is not a readable image (Image size (400000000 pixels) exceeds limit",
        image_folder("decompression bomb")),
    "prepare an image folder with transparency": Case(
        ["prepare", "folder:{tmp}/images", "--out", "{tmp}/s", "--no-progress"],
        "has transparent pixels", image_folder("transparent")),
    # files reached twice through links
    "image folder test image linked to a train image": Case(
        [*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"],
        "are one file (through a link); image folder {tmp}/images must hold each image once",
        both(image_folder("none"), linked("images/test/a/0.png", "images/train/a/0.png"))),
    "image folder class linked to another": Case(
        [*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"], "are one file",
        both(image_folder("none"), linked("images/train/b", "images/train/a"))),
    "image folder hard link across splits": Case(
        [*TRAIN, "data.name=folder:{tmp}/images", "data.val_size=1"], "are one file",
        both(image_folder("none"), linked("images/test/b/3.png", "images/train/b/3.png",
                                          hard=True))),
    "prepare an image folder with a linked image": Case(
        ["prepare", "folder:{tmp}/images", "--out", "{tmp}/s", "--no-progress"], "are one file",
        both(image_folder("none"), linked("images/test/a/0.png", "images/train/a/0.png"))),
    "npz test split linked to the train split": Case(
        [*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=4"],
        "train.npz and {tmp}/npz/test.npz are one file (through a link)",
        both(npz_counts(40, 5), linked("npz/test.npz", "npz/train.npz"))),
    "npz test split a hard link of the train split": Case(
        [*TRAIN, "data.name=npz:{tmp}/npz", "data.val_size=4"], "are one file",
        both(npz_counts(40, 5), linked("npz/test.npz", "npz/train.npz", hard=True))),
    "mnist test images linked to the train images": Case(
        [*TRAIN, "data.name=mnist", "data.root={tmp}", "data.val_size=1"],
        "t10k-images-idx3-ubyte are one file (through a link)", mnist_files("linked")),
}
if not torch.cuda.is_available():
    CASES["cuda without a GPU"] = Case([*TRAIN, "train.device=cuda"], "no CUDA device is available")
if NOT_ROOT:
    CASES["run folder read-only"] = Case(
        [*TRAIN, "log.out_dir={tmp}/locked/run"], "cannot use",
        lambda tmp, world, monkeypatch: (tmp / "locked").mkdir(mode=0o500))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A finished quick-start run (checkpoint, samples, metrics), its embeddings and a digits
    store: the existing work that no mistake may touch."""
    world = tmp_path_factory.mktemp("world")
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      ["train.steps=20", "log.num_samples=4", f"log.out_dir={world / 'run'}"])
    train(cfg, show_progress=False)
    main(["embed", "--checkpoint", str(world / "run" / "checkpoint.pt"), "--no-progress",
          "--out", str(world / "embeddings.npz")])
    main(["prepare", "digits", "--out", str(world / "store"), "--no-progress"])
    return world


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (the run lock's own bookkeeping aside) and its sha256."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != ".lock"}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_mistake_is_one_error_line_and_changes_nothing(case, world, tmp_path, capsys,
                                                         monkeypatch):
    if case.make is not None:
        case.make(tmp_path, world, monkeypatch)
    monkeypatch.chdir(case.cwd.format(tmp=tmp_path, world=world) if case.cwd else ROOT)
    before, inputs = snapshot(world), snapshot(tmp_path)
    argv = [arg.format(tmp=tmp_path, world=world) for arg in case.argv]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert case.message.format(tmp=tmp_path, world=world) in err
    assert "Traceback" not in out + err
    assert snapshot(world) == before, "an existing run folder changed"
    assert snapshot(tmp_path) == inputs, "the failed command left files behind"


def test_a_locked_run_folder_and_an_uneven_global_batch(capsys, tmp_path, monkeypatch):
    argv = ["train", *QUICK, f"log.out_dir={tmp_path / 'run'}"]
    with RunLock(tmp_path / "run"):
        with pytest.raises(SystemExit):
            main(argv)
        assert "is in use by another training (pid" in capsys.readouterr().err
    monkeypatch.setattr(distributed, "setup", lambda *args: distributed.Distributed(
        rank=0, world_size=3))  # as if torchrun had started three processes
    with pytest.raises(SystemExit):
        main([*argv, "train.batch_size=64"])
    assert "'train.batch_size' (64) is the global batch and must divide evenly among the 3" \
        in capsys.readouterr().err
