"""``mixerflow compare``: complete reports with finite numbers, and a stop that a rerun resumes."""

import dataclasses
import json
import math
import signal
import subprocess
import sys

import pytest
import torch

from mixerflow.cli import main
from mixerflow.core.errors import UserError
from mixerflow.experiments.compare import conditioning_note, fair_configs, recipe_note
from mixerflow.models import build_model
from mixerflow.models.flow import count_parameters
from mixerflow.training.config import load_configs
from support import ENV, QUICKSTARTS, wait_for_step

CONFIGS = ["--model", str(QUICKSTARTS["mixerflow"]), "--model", str(QUICKSTARTS["glow"])]


def test_compare_of_three_models_writes_the_report(tmp_path):
    attention = tmp_path / "attention.yaml"
    attention.write_text("model: {kind: tarflow, patch_size: 2, heads: 2}\n")
    out = tmp_path / "report"
    command = ["compare", *CONFIGS, "--model", str(attention), "--steps", "40", "--out",
               str(out), "--no-progress", "train.eval_every=20", "log.num_samples=4"]
    main(command)
    names = ("quickstart", "quickstart_glow", "attention")
    for name in ("report.json", "report.md", "bpd_vs_time.png",
                 *(f"samples_{model}.png" for model in names)):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert list(report["models"]) == list(names)
    runs = [report["models"][name]["runs"][0] for name in names]
    assert report["models"]["attention"]["model"]["kind"] == "tarflow"
    for run in runs:
        assert abs(run["num_params"] - runs[0]["num_params"]) <= 0.05 * runs[0]["num_params"]
        assert run["step"] == 40
        for key in ("test_bpd", "test_bpd_se", "train_images_per_s", "sample_images_per_s",
                    "peak_memory_mb", "wall_s"):
            assert math.isfinite(run[key]) and run[key] > 0, key
    table = (out / "report.md").read_text()
    assert all(f"| {name} | " in table for name in names)
    # A rerun reuses the finished runs instead of training again.
    first = (out / "runs" / "attention_seed0" / "results.json").read_text()
    main(command)
    assert json.loads(first)["test_bpd"] == json.loads(
        (out / "report.json").read_text())["models"]["attention"]["runs"][0]["test_bpd"]


def test_widths_are_matched_on_the_transforms_whatever_each_model_dequantizes_with():
    """A learned dequantizer is one model's own setting: it neither shrinks the others nor
    changes the width its own transform gets."""
    uniform = dict(zip(("mixerflow", "glow"), load_configs(list(QUICKSTARTS.values())),
                       strict=True))
    first = uniform["mixerflow"]
    learned = {**uniform, "mixerflow": dataclasses.replace(first, model=dataclasses.replace(
        first.model, dequantization="variational"))}
    matched = {recipe: fair_configs(configs) for recipe, configs in
               (("uniform", uniform), ("learned", learned))}
    assert matched["uniform"]["glow"].model == matched["learned"]["glow"].model
    flows = {name: build_model(cfg.model, (1, 8, 8), 17)
             for name, cfg in matched["learned"].items()}
    transforms = {name: count_parameters(flow.transform) for name, flow in flows.items()}
    assert abs(transforms["glow"] - transforms["mixerflow"]) <= 0.05 * transforms["mixerflow"]
    assert count_parameters(flows["mixerflow"].dequantizer) > 0
    assert recipe_note(matched["uniform"]) is None
    assert "(mixerflow: variational, glow: uniform)" in recipe_note(matched["learned"])
    noisy = {**uniform, "mixerflow": dataclasses.replace(first, model=dataclasses.replace(
        first.model, dequantization="gaussian"))}
    with pytest.raises(UserError, match="mixerflow models noisy images"):
        fair_configs(noisy)  # a density of noisy images is no bound: never in one table


def test_class_conditional_models_are_matched_with_their_class_tables():
    configs = dict(zip(("mixerflow", "glow"), load_configs(
        list(QUICKSTARTS.values()), ["model.class_conditional=true"]), strict=True))
    matched = fair_configs(configs)
    flows = {name: build_model(cfg.model, (1, 8, 8), 17, num_classes=10)
             for name, cfg in matched.items()}
    counts = {name: count_parameters(flow.transform) for name, flow in flows.items()}
    assert abs(counts["glow"] - counts["mixerflow"]) <= 0.05 * counts["mixerflow"]
    assert "mixerflow, glow are class-conditional" in conditioning_note(matched)


@pytest.mark.slow
def test_sigterm_to_compare_alone_saves_the_training_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "report"
    command = [sys.executable, "-m", "mixerflow.cli", "compare", *CONFIGS, "--steps", "80",
               "--out", str(out), "--no-progress", "train.log_every=5",
               "train.eval_every=1000", "log.num_samples=4", "train.threads=1"]
    run_dir = out / "runs" / "quickstart_seed0"
    compare = subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True)
    wait_for_step(run_dir / "metrics.jsonl", 20, compare)
    compare.send_signal(signal.SIGTERM)  # to compare alone, not to its training child
    _, err = compare.communicate(timeout=120)
    assert compare.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: stopped by SIGTERM; rerun the same command to resume {run_dir}")
    stopped = torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"]
    assert 20 <= stopped < 80 and not (run_dir / "results.json").exists()
    done = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert [model["runs"][0]["step"] for model in report["models"].values()] == [80, 80]
