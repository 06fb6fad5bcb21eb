"""The command line end to end: train, evaluate and sample from a checkpoint (its mistakes
are in test_bad_inputs.py)."""

import re
import subprocess
import sys

import torch

from support import QUICK, ROOT


def test_the_size_check_leaves_the_random_state_alone():
    from mixerflow import load_config
    from mixerflow.models.sizing import estimate_parameters

    before = torch.get_rng_state()
    for kind in ("mixerflow", "glow"):
        estimate_parameters(load_config(None, [f"model.kind={kind}"]).model, (1, 8, 8))
    assert torch.equal(torch.get_rng_state(), before)  # the model's init must not move


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
