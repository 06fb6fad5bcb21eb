"""``mixerflow bench``: complete reports with finite numbers, at the data's shape or over a
sweep of sizes."""

import json
import math

import torch

from mixerflow.cli import main
from mixerflow.experiments import bench, counting
from mixerflow.training.config import load_config
from support import QUICKSTARTS

BOTH = ["--config", str(QUICKSTARTS["mixerflow"]), "--config", str(QUICKSTARTS["glow"])]


def test_scaling_report_fits_an_exponent_per_model(tmp_path):
    # model.blocks is a MixerFlow key and model.steps_per_level a Glow one: each goes to its own
    main(["bench", *BOTH, "--sizes", "8,16", "--batch-size", "2", "--timed-steps", "1",
          "--threads", "1", "--out", str(tmp_path), "model.blocks=2", "model.steps_per_level=2"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["pixels"] for row in report["rows"]] == [64, 64, 256, 256]
    for fit in report["exponents"].values():
        assert math.isfinite(fit["time"])
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_bench_measures_each_config_at_its_data_shape(tmp_path):
    main(["bench", *BOTH, "--batch-size", "2", "--timed-steps", "1", "--threads", "1", "--out",
          str(tmp_path)])
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
    assert row["peak_flops_per_s"] >= counting.matmul_flops_per_s(torch.device("cpu"), False) / 2
