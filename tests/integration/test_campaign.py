import json

import pytest

from mixerflow.cli import main


@pytest.mark.slow
def test_campaign_smoke_runs_bench_and_compare_end_to_end(tmp_path, capsys):
    out = tmp_path / "campaign"
    main(["campaign", "--smoke", "--out", str(out)])
    bench = json.loads((out / "bench" / "report.json").read_text())
    measured = {(row["name"], row["mode"], row["precision"]) for row in bench["rows"]}
    assert measured == {(name, mode, precision) for name in ("mixerflow", "glow")
                        for mode in ("eager", "compiled") for precision in ("fp32", "bf16")}
    first = bench["rows"][0]  # the headline first, so a bench cut short still has it
    assert (first["name"], first["mode"], first["precision"]) == ("mixerflow", "compiled", "bf16")
    for row in bench["rows"]:
        assert row["images_per_s"] > 0 and row["flops_per_image"] > 0 and row["mfu"] > 0
        assert (row["kernel_ops_per_step"] is None) == (row["mode"] == "compiled")
    compare = json.loads((out / "compare" / "report.json").read_text())
    params = [model["summary"]["num_params"]["mean"] for model in compare["models"].values()]
    assert abs(params[0] - params[1]) / params[0] < 0.05  # matched parameter counts
    assert "Headline: the bf16 compiled MixerFlow training step runs at" in (
        out / "report.md").read_text()
    capsys.readouterr()
    main(["campaign", "--smoke", "--out", str(out), "--parts", "bench"])  # resumes: no rerun
    assert capsys.readouterr().out.count("bench: reusing") == 8


def test_campaign_without_cifar10_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["campaign", "--parts", "compare", "--data-root", str(tmp_path),
              "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and "cifar" in error.lower()


def test_campaign_rejects_an_unknown_part(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["campaign", "--smoke", "--parts", "bench,train", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "--parts takes a comma list of bench, compare" in capsys.readouterr().err
