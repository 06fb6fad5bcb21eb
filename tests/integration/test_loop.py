import json
import math
import os
import signal
import time

import pytest
import torch

from mixerflow import evaluate_bpd, load_checkpoint, load_config, load_splits, train
from mixerflow.core.errors import UserError
from mixerflow.models import build_model
from mixerflow.training.lifecycle import RunLock
from mixerflow.training.start import Progress
from mixerflow.training.step import TrainStep, make_optimizer
from support import SMALL, TINY, untrained_test_bpd


def run(tmp_path, name, *overrides, resume=False):
    cfg = load_config(None, [*SMALL, f"log.out_dir={tmp_path / name}", *overrides])
    return cfg, train(cfg, resume=resume, show_progress=False)


def test_training_on_digits_lowers_test_bpd(tmp_path):
    start_bpd = untrained_test_bpd(load_config(None, SMALL))
    _, result = run(tmp_path, "run", "train.steps=800")
    # ActNorm's init already fits a per-pixel Gaussian (~2.9); uniform would be 4.09.
    assert result["test_bpd"] < start_bpd - 0.4
    assert result["test_bpd"] < 2.55
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.pt", "samples.png"):
        assert (tmp_path / "run" / name).is_file()


def test_same_seed_same_result(tmp_path):
    _, a = run(tmp_path, "a", "train.steps=15")
    _, b = run(tmp_path, "b", "train.steps=15")
    _, c = run(tmp_path, "c", "train.steps=15", "train.seed=1")
    assert a["test_bpd"] == b["test_bpd"] != c["test_bpd"]


def signal_at_step(signals: list[int], at_step: int):
    """A ``Progress.done`` that sends ``signals`` to this process when step ``at_step`` is done."""

    def done(self, cfg):
        if self.step == at_step:
            for sig in signals:
                os.kill(os.getpid(), sig)
        return self.step >= cfg.train.steps

    return done


LEARNED = ["model.dequantization=variational", "train.ema=0.9"]  # the dequantizer, an average


@pytest.mark.parametrize(("sig", "recipe"), [(signal.SIGTERM, []), (signal.SIGINT, []),
                                             (signal.SIGTERM, LEARNED)],
                         ids=["SIGTERM", "SIGINT", "SIGTERM-variational-ema"])
def test_a_stop_signal_checkpoints_at_a_step_boundary_and_resume_is_exact(tmp_path, monkeypatch,
                                                                          sig, recipe):
    run(tmp_path, "straight", "train.steps=30", *recipe)
    handler_before = signal.getsignal(sig)
    with monkeypatch.context() as patch:
        patch.setattr(Progress, "done", signal_at_step([sig], 15))
        name = signal.Signals(sig).name
        with pytest.raises(UserError, match=f"stopped by {name} at step 16; checkpoint saved"):
            run(tmp_path, "halves", "train.steps=30", *recipe)
    assert torch.load(tmp_path / "halves" / "checkpoint.pt", weights_only=True)["step"] == 16
    assert signal.getsignal(sig) == handler_before  # the run's handler is gone
    _, resumed = run(tmp_path, "halves", "train.steps=30", *recipe, resume=True)
    straight = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    halves = torch.load(tmp_path / "halves" / "checkpoint.pt", weights_only=True)
    assert halves["step"] == straight["step"] == 30
    saved = ("model", "ema_model") if recipe else ("model",)
    for part in saved:
        for key, value in straight[part].items():
            assert torch.equal(value, halves[part][key]), (part, key)
    assert halves.get("ema_updates") == straight.get("ema_updates")
    results = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert resumed["test_bpd"] == results["test_bpd"]
    assert resumed.get("test_bpd_raw") == results.get("test_bpd_raw")
    logged = [json.loads(line) for line in (tmp_path / "halves" / "metrics.jsonl").open()]
    straight_log = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").open()]
    assert [r["step"] for r in logged] == [r["step"] for r in straight_log]  # none twice


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(Progress, "done", signal_at_step([signal.SIGINT, signal.SIGINT], 12))
        with pytest.raises(UserError, match="interrupted during step 13; not saved"):
            run(tmp_path, "run", "train.steps=30", "train.checkpoint_every=10")
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 10


def test_a_run_folder_in_use_refuses_a_second_training_and_a_stale_lock_is_taken(tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(UserError, match=r"run is in use by another training \(pid \d+ on"):
            run(tmp_path, "run", "train.steps=5")
    assert not (tmp_path / "run").exists()  # the lock made the folder; nothing else wrote
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").write_text("pid 999999 on a-machine-that-crashed\n")
    (tmp_path / "run" / ".checkpoint.pt.k9x.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 700, "train_bpd": 9}\n')
    _, result = run(tmp_path, "run", "train.steps=5")
    assert result["step"] == 5
    assert not list((tmp_path / "run").glob("*.tmp"))
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert all(record["step"] <= 5 for record in logged)  # the stale step-700 record is gone


def test_a_slow_model_under_a_time_budget_reaches_its_rate_and_warms_up_for_its_share(
        tmp_path, monkeypatch):
    """A step of 20 ms and a 3 s budget: about 150 steps, far fewer than warmup_steps. The
    warm-up must end by warmup_fraction of the budget, not after warmup_steps. (The cosine
    has already fallen to 0.994 of the rate at 5 % of the budget, and falls slowly there, so
    a logged step landing a few steps past the peak still passes 0.97; at 10 % it would
    not, and the test failed by timing jitter.)"""
    plain_call = TrainStep.__call__

    def slow_call(self, *args):
        time.sleep(0.02)
        return plain_call(self, *args)

    monkeypatch.setattr(TrainStep, "__call__", slow_call)
    cfg, _ = run(tmp_path, "slow", "train.steps=1000000", "train.max_minutes=0.05",
                 "train.warmup_steps=100000", "train.warmup_fraction=0.05", "train.log_every=1",
                 "train.eval_every=1000000", "train.checkpoint_every=1000000")
    rates = [record["lr"] for record in map(json.loads, (tmp_path / "slow" / "metrics.jsonl")
                                            .open()) if "lr" in record]
    peak_step = rates.index(max(rates))
    assert len(rates) > 30
    assert max(rates) > 0.97 * cfg.train.lr
    assert peak_step <= 0.05 * len(rates) + 2  # below its rate for at most its share


def test_the_average_of_the_weights_is_reported_saved_and_loaded_beside_the_trained_ones(
        tmp_path, capsys):
    """With train.ema the figures are the average's, the trained weights' figures are those
    of a run without it (the average does not touch training), and tools load the average."""
    _, plain = run(tmp_path, "plain", "train.steps=40", "train.eval_every=20")
    cfg, averaged = run(tmp_path, "ema", "train.steps=40", "train.eval_every=20", "train.ema=0.9")
    # 1 / (1 - 0.9) = 10 steps of 40: a quarter of the run, said; 0.5 (2 steps) is not
    assert "averages over the last ~10 steps, 25% of train.steps=40" in capsys.readouterr().out
    run(tmp_path, "short", "train.steps=40", "train.eval_every=40", "train.ema=0.5")
    assert "note: train.ema" not in capsys.readouterr().out
    assert averaged["test_bpd_raw"] == plain["test_bpd"] != averaged["test_bpd"]
    test = load_splits(cfg.data).test
    loaded = load_checkpoint(tmp_path / "ema" / "checkpoint.pt")
    assert evaluate_bpd(loaded, test, cfg.train.eval_batch_size)[0] == averaged["test_bpd"]
    logs = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]
            for name in ("plain", "ema")}
    plain_val = [r["val_bpd"] for r in logs["plain"] if "val_bpd" in r]
    assert [r["val_bpd_raw"] for r in logs["ema"] if "val_bpd" in r] == plain_val
    assert "test_bpd_raw" not in plain


def test_a_resume_that_switches_the_average_off_or_on_says_so(tmp_path, capsys):
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    run(tmp_path, "run", "train.steps=4", "train.ema=0.9")
    capsys.readouterr()
    _, trained = run(tmp_path, "run", "train.steps=6", resume=True)
    assert "train.ema is off: the average of the weights" in capsys.readouterr().out
    assert "ema_model" not in torch.load(checkpoint, weights_only=True)
    assert "test_bpd_raw" not in trained
    _, averaged = run(tmp_path, "run", "train.steps=9", "train.ema=0.9", resume=True)
    assert "holds no average of the weights; it starts at step 6" in capsys.readouterr().out
    assert torch.load(checkpoint, weights_only=True)["ema_updates"] == 3
    assert "test_bpd_raw" in averaged


def test_a_resume_takes_a_new_weight_decay(tmp_path):
    run(tmp_path, "run", "train.steps=4", "train.weight_decay=0")
    run(tmp_path, "run", "train.steps=6", "train.weight_decay=0.5", resume=True)
    groups = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["optimizer"][
        "param_groups"]
    assert {group["weight_decay"] for group in groups} == {0.5}


def test_reloaded_checkpoint_reproduces_test_bpd(tmp_path):
    cfg, result = run(tmp_path, "run", "train.steps=20")
    flow = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    bpd, se = evaluate_bpd(flow, load_splits(cfg.data).test, 500)
    assert bpd == pytest.approx(result["test_bpd"], abs=1e-6)
    assert se == pytest.approx(result["test_bpd_se"], abs=1e-6)


def test_an_existing_run_is_never_overwritten(tmp_path):
    run(tmp_path, "run", "train.steps=5")
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(UserError, match="already exists; pass --resume"):
        run(tmp_path, "run", "train.steps=5")
    with pytest.raises(UserError, match="model.blocks is 3 but"):
        run(tmp_path, "run", "train.steps=10", "model.blocks=3", resume=True)
    with pytest.raises(UserError, match="data.val_size is 100 but"):
        run(tmp_path, "run", "train.steps=10", "data.val_size=100", resume=True)
    with pytest.raises(UserError, match="train.batch_size is 32 but .* with 64"):
        run(tmp_path, "run", "train.steps=10", "train.batch_size=32", resume=True)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_a_resume_with_nothing_to_train_writes_nothing(tmp_path, capsys):
    _, finished = run(tmp_path, "run", "train.steps=5")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    _, again = run(tmp_path, "run", "train.steps=5", resume=True)
    assert "already trained to step 5, its budget; nothing to do" in capsys.readouterr().out
    assert again == finished
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before


def test_a_resume_reads_the_data_where_the_run_was_trained(shared_data, tmp_path, monkeypatch):
    """The README's ``train.py --config … --resume`` names no data root: the run's is used;
    one that names a root (the data moved) reads it there."""
    monkeypatch.delenv("MIXERFLOW_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data here
    mnist = [*TINY["mixerflow"], "model.patch_size=4", "data.name=mnist", "data.val_size=100",
             "train.batch_size=16", "train.init_batch_size=64", "train.eval_batch_size=2000",
             "log.num_samples=2", f"log.out_dir={tmp_path / 'run'}"]
    train(load_config(None, [*mnist, f"data.root={shared_data}", "train.steps=2"]),
          show_progress=False)
    resumed = train(load_config(None, [*mnist, "train.steps=3"]), resume=True,
                    show_progress=False)
    assert resumed["step"] == 3
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["config"]["data"]["root"] == str(shared_data)
    (tmp_path / "moved").symlink_to(shared_data)
    moved = train(load_config(None, [*mnist, f"data.root={tmp_path / 'moved'}",
                                     "train.steps=4"]), resume=True, show_progress=False)
    assert moved["step"] == 4


def test_training_lowers_test_bpd_on_real_mnist(shared_data, tmp_path):
    overrides = [
        "data.name=mnist", f"data.root={shared_data}", "data.val_size=1000",
        "model.patch_size=7", "model.blocks=2", "model.channel_hidden=32",
        "model.patch_hidden=32", "train.steps=300", "train.batch_size=32",
        "train.eval_every=1000", "train.init_batch_size=256", "log.num_samples=4",
        f"log.out_dir={tmp_path / 'mnist'}",
    ]
    cfg = load_config(None, overrides)
    start_bpd = untrained_test_bpd(cfg)
    result = train(cfg, show_progress=False)
    assert result["test_bpd"] < start_bpd - 0.8


def test_a_non_finite_step_is_skipped_inside_the_fused_update(tmp_path):
    cfg = load_config(None, SMALL)
    flow = build_model(cfg.model, (1, 8, 8), 17)
    step = TrainStep(flow, make_optimizer(flow, 1e-3, 0.0), device=torch.device("cpu"),
                     inject_nan=(4, 2))  # steps 2 and 3 of every 4 are non-finite
    batch = torch.randint(0, 17, (8, 1, 8, 8), dtype=torch.uint8)
    step(batch, 0, 1e-3)
    step(batch, 1, 1e-3)
    assert step.health() == (0, 0)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    adam_steps = [s["step"].item() for s in step.optimizer.state.values()]
    step(batch, 2, 1e-3)
    step(batch, 3, 1e-3)
    assert step.health() == (2, 2)  # skipped, two in a row
    for key, value in flow.state_dict().items():
        assert torch.equal(value, before[key]), key  # the update was skipped, not applied
    assert [s["step"].item() for s in step.optimizer.state.values()] == adam_steps
    step(batch, 4, 1e-3)
    assert step.health() == (0, 0)
    assert any(not torch.equal(v, before[k]) for k, v in flow.state_dict().items())


@pytest.mark.parametrize("recipe", [[], ["train.ema=0.9"]], ids=["trained", "averaged"])
def test_injected_non_finite_losses_are_skipped_rolled_back_and_logged(tmp_path, recipe):
    _, result = run(tmp_path, "run", "train.steps=120", "train.log_every=5",
                    "train.checkpoint_every=40", "train.inject_nan_every=50",
                    "train.inject_nan_steps=12", *recipe)  # steps 38-49 and 88-99 non-finite
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    rollbacks = [r for r in records if "rollback" in r]
    assert [r["lr_scale"] for r in rollbacks] == [0.5, 0.25]
    assert sum(r.get("skipped_steps", 0) for r in records) == 24
    assert math.isfinite(result["test_bpd"]) and result["test_bpd"] < math.log2(17)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["lr_scale"] == 0.25 and saved["rollbacks"] == 2


def test_endless_divergence_stops_with_a_true_message(tmp_path):
    with pytest.raises(UserError, match="diverged: .* after 3 roll-back\\(s\\).*; no checkpoint "
                       "was written"):
        run(tmp_path, "run", "train.steps=400", "train.log_every=5",
            "train.checkpoint_every=1000", "train.inject_nan_every=20",
            "train.inject_nan_steps=19")


def test_a_full_disk_keeps_the_last_checkpoint_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno
    import io

    from mixerflow.training import checkpoint

    saves, save = [], torch.save

    def save_on_a_disk_that_fills(payload, file):
        if not isinstance(file, io.BytesIO):  # a file in the run folder, not a memory copy
            saves.append(payload["step"])
            if len(saves) == 2:  # the second checkpoint meets a full disk half way
                file.write(b"PK\x03\x04 partial")
                raise OSError(errno.ENOSPC, "No space left on device")
        save(payload, file)

    monkeypatch.setattr(checkpoint.torch, "save", save_on_a_disk_that_fills)
    with pytest.raises(UserError, match="cannot write .*checkpoint.pt: No space left on device; "
                       "the previous checkpoint.pt is kept; step 20 was not saved"):
        run(tmp_path, "run", "train.steps=40", "train.checkpoint_every=10")
    monkeypatch.undo()
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 10
    assert sorted(p.name for p in (tmp_path / "run").glob(".*.tmp")) == []
    _, result = run(tmp_path, "run", "train.steps=40", "train.checkpoint_every=10", resume=True)
    assert result["step"] == 40 and math.isfinite(result["test_bpd"])
