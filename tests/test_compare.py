"""``mixerflow compare`` and ``mixerflow bench`` write complete reports with finite numbers."""

import json
import math
import signal
import subprocess
import sys

import pytest
import torch
from test_cli import ROOT
from test_distributed import ENV, wait_for_step

from mixerflow.cli import main
from mixerflow.core.errors import UserError
from mixerflow.experiments import bench
from mixerflow.models import build_model, count_parameters, match_width
from mixerflow.training.config import load_config

CONFIGS = ["--model", str(ROOT / "configs" / "quickstart.yaml"),
           "--model", str(ROOT / "configs" / "quickstart_glow.yaml")]


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


def test_scaling_report_fits_an_exponent_per_model(tmp_path):
    # model.blocks is a MixerFlow key and model.steps_per_level a Glow one: each goes to its own
    main(["bench", "--config", CONFIGS[1], "--config", CONFIGS[3], "--sizes", "8,16",
          "--batch-size", "2", "--timed-steps", "1", "--threads", "1", "--out", str(tmp_path),
          "model.blocks=2", "model.steps_per_level=2"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["pixels"] for row in report["rows"]] == [64, 64, 256, 256]
    for fit in report["exponents"].values():
        assert math.isfinite(fit["time"])
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_bench_measures_each_config_at_its_data_shape(tmp_path):
    main(["bench", "--config", CONFIGS[1], "--config", CONFIGS[3], "--batch-size", "2",
          "--timed-steps", "1", "--threads", "1", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["name"] for row in report["rows"]] == ["quickstart", "quickstart_glow"]
    assert all(row["image_shape"] == [1, 8, 8] for row in report["rows"])
    assert all(row["ms_per_image"] > 0 for row in report["rows"])


def test_mfu_of_a_bf16_step_stays_below_one_where_bf16_products_are_slow():
    # 256 patches: the patch-mixing LU products, float32 under autocast, dominate the FLOPs
    model = load_config(None, ["model.patch_size=2", "model.blocks=2",
                               "model.channel_hidden=16", "model.patch_hidden=16"]).model
    row = bench.measure_training(vars(model), (1, 32, 32), batch_size=8, steps=2,
                                 device_name="cpu", precision="bf16")
    assert row["precision"] == "bf16" and 0 < row["mfu"] < 1
    assert row["peak_flops_per_s"] >= bench.matmul_flops_per_s(torch.device("cpu"), False) / 2


@pytest.mark.parametrize("overrides, image_shape, target", [
    (["model.kind=glow", "model.levels=2", "model.steps_per_level=4"], (1, 8, 8), 84_432),
    (["model.kind=glow", "model.levels=2", "model.steps_per_level=8"], (1, 28, 28), 567_012),
    (["model.kind=glow", "model.levels=3", "model.steps_per_level=4"], (3, 32, 32), 2_000_000),
    (["model.conditioner=kan", "model.patch_hidden=64"], (1, 28, 28), 567_012),
    (["model.channel_mixing=maf"], (1, 28, 28), 567_012),
    (["model.kind=tarflow", "model.heads=8"], (1, 28, 28), 567_012),
])
def test_parameter_matching_lands_within_five_percent(overrides, image_shape, target):
    cfg = load_config(None, overrides).model
    matched = match_width(cfg, image_shape, target)
    assert abs(count_parameters(build_model(matched, image_shape, 256)) - target) <= 0.05 * target
    assert getattr(matched, cfg.REPEATED) == getattr(cfg, cfg.REPEATED)  # depth unchanged
    if cfg.kind == "mixerflow":  # both widths scaled together
        ratio = cfg.patch_hidden / cfg.channel_hidden
        assert abs(matched.patch_hidden / matched.channel_hidden - ratio) < 0.05


def test_parameter_matching_refuses_an_impossible_target():
    cfg = load_config(None, ["model.kind=glow", "model.levels=2"]).model
    with pytest.raises(UserError, match="even the narrowest glow"):
        match_width(cfg, (3, 8, 8), 100)
