"""The command line end to end: train, evaluate and sample from a checkpoint (its mistakes
are in test_bad_inputs.py)."""

import re
import subprocess
import sys

import numpy as np
import torch

from mixerflow import load_checkpoint, load_config, train
from mixerflow.cli import main
from support import QUICK, ROOT, SMALL


def test_the_size_check_leaves_the_random_state_alone():
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


def test_a_class_conditional_run_classifies_and_samples_by_class(tmp_path, capsys):
    """A short class-conditional run on the digits: a classifier far above chance (0.1), the
    class mixture's bits/dim above the bits/dim given the class, a grid with one row per
    class, and a resumed run that continues from its checkpoint."""
    run_dir = tmp_path / "run"
    overrides = [*SMALL, "model.class_conditional=true", f"log.out_dir={run_dir}",
                 "log.num_samples=20"]
    result = train(load_config(None, [*overrides, "train.steps=150"]), show_progress=False)
    checkpoint = str(run_dir / "checkpoint.pt")
    assert load_checkpoint(checkpoint).num_classes == 10
    capsys.readouterr()
    main(["classify", "--checkpoint", checkpoint])
    report = capsys.readouterr().out
    accuracy = float(re.search(r"accuracy (\S+) \(", report).group(1))
    given, mixture = (float(value) for value in re.search(
        r"given the class (\S+) ± \S+; of the class mixture p\(x\) (\S+)", report).groups())
    assert accuracy > 0.5 and given == round(result["test_bpd"], 4) < mixture
    assert len(re.findall(r"^\s+\d\s+\d+\s+\S+\s+\S+$", report, re.MULTILINE)) == 10
    main(["sample", "--checkpoint", checkpoint, "--class", "all", "--n", "3", "--guidance", "2",
          "--out", str(tmp_path / "classes.png"), "--npy"])
    assert np.load(tmp_path / "classes.npy").shape == (30, 1, 8, 8)  # three of each class
    resumed = train(load_config(None, [*overrides, "train.steps=160"]), resume=True,
                    show_progress=False)
    assert resumed["step"] == 160
