"""``mixerflow compare`` and ``mixerflow bench`` write complete reports with finite numbers."""

import json
import math

from test_cli import ROOT

from mixerflow.cli import main

CONFIGS = ["--mixerflow", str(ROOT / "configs" / "quickstart.yaml"),
           "--glow", str(ROOT / "configs" / "quickstart_glow.yaml")]


def test_compare_on_digits_writes_the_report(tmp_path):
    out = tmp_path / "report"
    main(["compare", *CONFIGS, "--steps", "40", "--out", str(out), "--no-progress",
          "train.eval_every=20", "log.num_samples=4"])
    for name in ("report.json", "report.md", "bpd_vs_time.png", "samples_mixerflow.png",
                 "samples_glow.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    mixer, glow = (report["models"][name]["runs"][0] for name in ("mixerflow", "glow"))
    assert abs(glow["num_params"] - mixer["num_params"]) <= 0.05 * mixer["num_params"]
    for run in (mixer, glow):
        assert run["step"] == 40
        for key in ("test_bpd", "test_bpd_se", "train_images_per_s", "sample_images_per_s",
                    "peak_memory_mb", "wall_s"):
            assert math.isfinite(run[key]) and run[key] > 0, key
    assert "| glow | " in (out / "report.md").read_text()
    # A rerun reuses the finished runs instead of training again.
    first = (out / "runs" / "glow_seed0" / "results.json").read_text()
    main(["compare", *CONFIGS, "--steps", "40", "--out", str(out), "--no-progress",
          "train.eval_every=20", "log.num_samples=4"])
    assert json.loads(first)["test_bpd"] == json.loads(
        (out / "report.json").read_text())["models"]["glow"]["runs"][0]["test_bpd"]


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
