"""User mistakes end in one ``error:`` line and exit status 2; commands that work, work."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mixerflow import distributed
from mixerflow.cli import main
from mixerflow.lifecycle import RunLock

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--no-progress"]


def fails_with(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert message in err


def test_unknown_config_key(capsys):
    fails_with(capsys, ["train", *QUICK, "model.depth=3"], "unknown config key 'model.depth'")


def test_patch_size_that_does_not_divide(capsys, tmp_path):
    argv = ["train", *QUICK, "model.patch_size=3", f"log.out_dir={tmp_path}"]
    fails_with(capsys, argv, "patch_size 3 does not divide the image size 8x8")


def test_missing_data_root(capsys, tmp_path):
    argv = ["train", *QUICK, "data.name=mnist", "--data-root", str(tmp_path / "nowhere"),
            f"log.out_dir={tmp_path / 'run'}"]
    fails_with(capsys, argv, "not found in")


def test_a_locked_run_folder_and_an_uneven_global_batch(capsys, tmp_path, monkeypatch):
    argv = ["train", *QUICK, f"log.out_dir={tmp_path / 'run'}"]
    with RunLock(tmp_path / "run"):
        fails_with(capsys, argv, "is in use by another training (pid")
    monkeypatch.setattr(distributed, "setup", lambda *args: distributed.Distributed(
        rank=0, world_size=3))  # as if torchrun had started three processes
    fails_with(capsys, [*argv, "train.batch_size=64"],
               "'train.batch_size' (64) is the global batch and must divide evenly among the 3")


@pytest.mark.parametrize("override, message", [
    ("model.blocks=10000000", "the model has about 211,080,000,000 parameters: training needs"),
    ("train.device=cuda:abc", "'train.device' must be auto, cpu, cuda or cuda:N"),
    ("log.out_dir={blocker}/run", "cannot use {blocker}/run as the run folder"),
])
def test_train_mistakes_found_before_any_work(capsys, tmp_path, override, message):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fails_with(capsys, ["train", *QUICK, f"log.out_dir={tmp_path / 'run'}",
                        override.format(blocker=blocker)], message.format(blocker=blocker))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing written


def test_the_size_check_leaves_the_random_state_alone():
    from mixerflow import load_config
    from mixerflow.models.flow import estimate_parameters

    before = torch.get_rng_state()
    for kind in ("mixerflow", "glow"):
        estimate_parameters(load_config(None, [f"model.kind={kind}"]).model, (1, 8, 8))
    assert torch.equal(torch.get_rng_state(), before)  # the model's init must not move


def test_corrupt_checkpoint(capsys, tmp_path):
    broken = tmp_path / "checkpoint.pt"
    broken.write_bytes(b"not a checkpoint at all")
    fails_with(capsys, ["sample", "--checkpoint", str(broken)], "is corrupt or not a torch file")
    fails_with(capsys, ["sample", "--checkpoint", str(tmp_path / "gone.pt")], "not found")
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "mixerflow-checkpoint-v1", "payload": Path("/")}, unsafe)
    fails_with(capsys, ["sample", "--checkpoint", str(unsafe)],
               "is not a mixerflow checkpoint: it holds Python objects beyond tensors")
    assert "weights_only" not in capsys.readouterr().err


def test_train_then_sample_from_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    env_run = [sys.executable, str(ROOT / "train.py"), *QUICK, "train.steps=10",
               f"log.out_dir={run_dir}", "log.num_samples=4"]
    done = subprocess.run(env_run, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    trained = re.search(r"test bits/dim (\S+) ± (\S+)", done.stdout).groups()
    evaluate = [sys.executable, "-m", "mixerflow.cli", "evaluate", "--checkpoint",
                str(run_dir / "checkpoint.pt")]
    done = subprocess.run(evaluate, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert re.search(r"test bits/dim (\S+) ± (\S+)", done.stdout).groups() == trained
    out = tmp_path / "grid.png"
    sample = [sys.executable, str(ROOT / "sample.py"), "--checkpoint",
              str(run_dir / "checkpoint.pt"), "--n", "9", "--out", str(out)]
    done = subprocess.run(sample, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0 and "samples/s" in done.stdout
    again = subprocess.run(env_run, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.strip().startswith("error: ")
