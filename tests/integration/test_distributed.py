"""Several processes through torchrun (gloo on the CPU): the same steps as one process, the
same evaluation, one run folder, and runs that survive SIGTERM and a dead rank.

Run as a script under torchrun, this file is the worker of the first tests: it trains a
small model a few steps and writes its parameters and evaluation to ``argv[1]``.
"""

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowcheck import DEVICES
from mixerflow import load_config, load_splits
from mixerflow.data.sampler import BatchSampler
from mixerflow.models import build_model
from mixerflow.training import distributed
from mixerflow.training.evaluate import evaluate_bpd
from mixerflow.training.step import TrainStep, initialize_actnorm, make_optimizer
from support import ENV, ROOT, SMALL, wait_for_step

ONE_THREAD = ["train.device=cpu", "log.wandb=disabled", "train.threads=1"]
SMALL = [*SMALL, *ONE_THREAD]
QUICKSTART = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--no-progress",
              "log.wandb=disabled", "train.threads=1"]


# the SMALL run as it is, with the learned dequantizer and the weights' average (which every
# rank must agree on too), with Jet's couplings in place of the MixerFlow, and
# class-conditional with labels dropped (every rank must drop the same ones)
JET = ["model.kind=jet", "model.patch_size=2", "model.couplings=3",
       "model.pattern=channels,spatial", "model.width=16", "model.heads=2"]
RECIPES = {"plain": SMALL,
           "variational+ema": [*SMALL, "model.dequantization=variational", "train.ema=0.5"],
           "jet": [*(o for o in SMALL if not o.startswith("model.")), *JET],
           "class-conditional": [*SMALL, "model.class_conditional=true",
                                 "model.label_drop=0.3"]}


def train_a_few_steps(out: Path, recipe: str = "plain", steps: int = 4) -> None:
    """Train the model ``RECIPES[recipe]`` describes ``steps`` steps on this process's
    part of each global batch; the main process writes the parameters, their average (if
    any) and the sharded test evaluation to ``out``."""
    cfg = load_config(None, RECIPES[recipe])
    world = distributed.setup("cpu")
    torch.manual_seed(0)
    splits = load_splits(cfg.data)
    classes = splits.class_count("digits") if cfg.model.class_conditional else 0
    flow = build_model(cfg.model, splits.image_shape, splits.num_levels, num_classes=classes)
    initialize_actnorm(flow, splits.train, cfg.train.init_batch_size, "cpu")
    step = TrainStep(flow, make_optimizer(flow, 2e-3, 0.0), device=world.device, world=world,
                     ema=cfg.train.ema, label_drop=cfg.model.drop_rate)
    batches = BatchSampler(splits.train.images, 64, world.device, seed=1, part=world.part,
                           labels=splits.train.labels if classes else None)
    for index in range(steps):
        images, labels = batches()
        step(images, index, 2e-3, labels)
    bpd, se = evaluate_bpd(flow, splits.test, 50, world=world)
    average = step.average.module.state_dict() if step.average else {}
    if world.is_main:
        torch.save({"model": flow.state_dict(), "average": average, "bpd": bpd, "se": se}, out)
    distributed.teardown(world)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *args]


@pytest.mark.parametrize("recipe", RECIPES)
def test_two_ranks_take_the_steps_of_one_process_and_evaluate_alike(tmp_path, recipe):
    out = tmp_path / "two.pt"
    subprocess.run(torchrun(__file__, str(out), recipe), check=True, env=ENV,
                   capture_output=True)
    train_a_few_steps(tmp_path / "one.pt", recipe)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(out)
    for part in ("model", "average"):
        for key, value in one[part].items():
            torch.testing.assert_close(two[part][key], value, rtol=0, atol=1e-5, msg=key)
    cfg = load_config(None, RECIPES[recipe])
    torch.manual_seed(0)  # the start of train_a_few_steps
    changed = build_model(cfg.model, (1, 8, 8), 17,
                          num_classes=10 if cfg.model.class_conditional else 0).state_dict()
    assert any(not torch.equal(changed[k], v) for k, v in one["model"].items() if "weight" in k)
    if recipe == "variational+ema":  # the dequantizer trained, and the average is one
        assert any(k.startswith("dequantizer.") and not torch.equal(changed[k], v)
                   for k, v in one["model"].items())
        assert any(not torch.equal(one["average"][k], v) for k, v in one["model"].items())
    if recipe == "class-conditional":  # the class embeddings trained
        assert any("classes" in k and not torch.equal(changed[k], v)
                   for k, v in one["model"].items())
    assert abs(two["bpd"] - one["bpd"]) < 1e-6 and abs(two["se"] - one["se"]) < 1e-6


@pytest.mark.slow
def test_torchrun_quickstart_survives_sigterm_and_matches_one_process(tmp_path):
    steps = ["train.steps=300", "train.eval_every=150", "train.checkpoint_every=150"]
    single = tmp_path / "single"
    subprocess.run([sys.executable, str(ROOT / "train.py"), *QUICKSTART, *steps,
                    f"log.out_dir={single}"], check=True, env=ENV, capture_output=True)
    run_dir = tmp_path / "two"
    command = torchrun(str(ROOT / "train.py"), *QUICKSTART, *steps, f"log.out_dir={run_dir}")
    launcher = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    wait_for_step(run_dir / "metrics.jsonl", 50, launcher)
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and "checkpoint saved" in err
    stopped = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert 50 <= stopped["step"] < 300
    done = subprocess.run([*command, "--resume"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    two = json.loads((run_dir / "results.json").read_text())
    one = json.loads((single / "results.json").read_text())
    assert two["step"] == one["step"] == 300 and two["processes"] == 2
    assert abs(two["test_bpd"] - one["test_bpd"]) < 0.05
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".lock", "checkpoint.pt", "config.yaml", "metrics.jsonl", "results.json", "samples.png"]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_torchrun_with_one_process_trains_as_a_plain_process(tmp_path, device):
    """``--nproc_per_node=1`` joins a process group (NCCL on CUDA, gloo on the CPU) and
    takes the steps of a plain run of the quick start."""
    settings = ["train.steps=200", "train.eval_every=100", f"train.device={device.type}"]
    results = {}
    for name, launcher in (("plain", [sys.executable]), ("torchrun", torchrun(nproc=1))):
        done = subprocess.run([*launcher, str(ROOT / "train.py"), *QUICKSTART, *settings,
                               f"log.out_dir={tmp_path / name}"],
                              env=ENV, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    plain, grouped = results["plain"], results["torchrun"]
    assert grouped["processes"] == 1 and grouped["step"] == plain["step"] == 200
    assert grouped["device"] == ("cuda:0" if device.type == "cuda" else "cpu")
    assert abs(grouped["test_bpd"] - plain["test_bpd"]) < 1e-3


def test_sigterm_to_a_plain_training_process_saves_a_checkpoint_and_says_so(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--no-progress", *SMALL, "train.steps=100000",
         "train.log_every=5", "train.checkpoint_every=100000", f"log.out_dir={run_dir}"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(run_dir / "metrics.jsonl", 20, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert len(err.strip().splitlines()) == 1, err
    stopped_at = int(re.fullmatch(r"error: stopped by SIGTERM at step (\d+); checkpoint saved "
                                  r"to .* \(continue with --resume\)", err.strip()).group(1))
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == stopped_at >= 20


@pytest.mark.slow
def test_two_nodes_on_one_machine_train_together_in_bf16(tmp_path):
    port = free_port()
    run_dir = tmp_path / "nodes"
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
         "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}",
         str(ROOT / "train.py"), "--no-progress", *SMALL, "train.steps=20",
         "train.precision=bf16", f"log.out_dir={run_dir}"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err
    result = json.loads((run_dir / "results.json").read_text())
    assert result["processes"] == 2 and result["step"] == 20
    assert math.isfinite(result["test_bpd"]) and result["test_bpd"] < math.log2(17)


@pytest.mark.slow
def test_a_dead_rank_ends_the_run_in_bounded_time_and_keeps_the_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    command = torchrun(str(ROOT / "train.py"), "--no-progress", *SMALL, "train.steps=100000",
                       "train.checkpoint_every=20", "train.log_every=5",
                       f"log.out_dir={run_dir}")
    launcher = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    wait_for_step(run_dir / "metrics.jsonl", 45, launcher)
    worker = next(int(pid) for pid in subprocess.run(
        ["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split())
    os.kill(worker, signal.SIGKILL)
    start = time.monotonic()
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0 and time.monotonic() - start < 60
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert saved["step"] >= 40 and saved["step"] % 20 == 0


if __name__ == "__main__":
    train_a_few_steps(Path(sys.argv[1]), sys.argv[2])
