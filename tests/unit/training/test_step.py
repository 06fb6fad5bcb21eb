"""The training step: bf16 autocast, the compiled step, graph breaks, the fused optimizer,
the batch sampler, and one step shared by training and the benchmark."""

import copy

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from flowcheck import DEVICES, assert_invertible, perturb
from mixerflow import load_config, train
from mixerflow.experiments import bench
from mixerflow.models import build_model
from mixerflow.training.step import TrainStep, compile_regions, make_optimizer
from support import TINY

CPU = torch.device("cpu")
STEPPED = {  # the tiny models, wide enough for the bf16 and compiled-step checks
    "mixerflow": [*TINY["mixerflow"], "model.patch_size=2", "model.channel_hidden=16",
                  "model.patch_hidden=16", "model.position_context=true",
                  "model.dequantization=variational", "model.dequant_hidden=8"],
    "glow": [*TINY["glow"], "model.levels=2", "model.learned_prior=true"],
    "tarflow": [*TINY["tarflow"], "model.patch_size=2", "model.width=16"],
    "jet": [*TINY["jet"], "model.patch_size=2", "model.width=16"],
    "jet-mlp": [*TINY["jet"], "model.patch_size=2", "model.width=16", "model.token_mixing=mlp"],
}
CONDITIONAL = ["model.class_conditional=true", "model.label_drop=0.5"]
STEPPED |= {f"{kind}|classes": [*STEPPED[kind], *CONDITIONAL]  # the class-conditional paths
            for kind in ("mixerflow", "glow", "tarflow", "jet")}
STEPPED["mixerflow|classes-only"] = [  # class context without positions
    *TINY["mixerflow"], "model.patch_size=2", *CONDITIONAL]
CLASSES = 3


def trained_like(kind: str, seed: int = 0, device: torch.device = CPU):
    """A tiny model on ``device`` off its identity initialisation (ActNorm set, weights
    perturbed), a batch of 17-level 8x8 images there and, for a class-conditional model,
    their labels of ``CLASSES`` classes (else None)."""
    torch.manual_seed(seed)
    model_cfg = load_config(None, STEPPED[kind]).model
    classes = CLASSES if model_cfg.class_conditional else 0
    flow = build_model(model_cfg, (1, 8, 8), 17, num_classes=classes)
    images = torch.randint(0, 17, (32, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, CLASSES, (32,)) if classes else None
    flow.train()
    with torch.no_grad():
        flow.bpd(images, labels=labels)
    return (perturb(flow, 0.05).to(device), images.to(device),
            None if labels is None else labels.to(device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", STEPPED)
def test_bf16_objective_is_within_a_hundredth_of_a_bit_of_fp32(kind, device):
    flow, images, labels = trained_like(kind, device=device)
    u0 = torch.rand(images.shape, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        fp32 = flow.log_bound(images, u0, labels)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16 = flow.log_bound(images, u0, labels)
    assert bf16.dtype == torch.float32  # the flow arithmetic stayed float32
    gap_bits = (fp32 - bf16).abs() / (flow.num_dims * torch.log(torch.tensor(2.0)))
    assert gap_bits.max() < 1e-2
    assert not torch.equal(fp32, bf16)  # the conditioners did run in bf16


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", STEPPED)
def test_bf16_steps_train_with_finite_loss_and_keep_the_flow_invertible(kind, device):
    flow, images, labels = trained_like(kind, device=device)
    step = TrainStep(flow, make_optimizer(flow, 1e-3, 0.0), device=device, precision="bf16",
                     label_drop=0.0 if labels is None else 0.5)
    losses = [step(images, i, 1e-3, labels).item() for i in range(4)]
    assert step.health() == (0, 0)  # no step skipped
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    flow.eval()
    context = flow.class_context(None if labels is None else labels[:4], 4)
    assert_invertible(flow.transform, 2 * torch.randn(4, 1, 8, 8, device=device), atol=1e-4,
                      context=context)
    samples = flow.sample(4, 1.0, generator=torch.Generator().manual_seed(0),
                          labels=None if labels is None else labels[:4],
                          guidance=None if labels is None else 2.0)
    assert samples.dtype == torch.uint8 and samples.device.type == device.type
    assert torch.equal(flow.decode(flow.encode(images)), images)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", STEPPED)
def test_the_objective_compiles_without_graph_breaks(kind, device):
    flow, images, labels = trained_like(kind, device=device)
    u0 = torch.rand(images[:4].shape, generator=torch.Generator().manual_seed(0)).to(device)
    labels = None if labels is None else labels[:4]
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with autocast:
            explanation = torch._dynamo.explain(flow.log_bound)(images[:4], u0, labels)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", STEPPED)
def test_compiled_step_equals_the_eager_step(kind, device, monkeypatch):
    """The same loss, gradients and update, up to float32 rounding (TF32 convolutions off:
    eager and inductor pick other kernels, and TF32's rounding would swamp the check)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch._dynamo.reset()
    eager_flow, images, labels = trained_like(kind, device=device)
    compiled_flow = copy.deepcopy(eager_flow)
    results = []
    for flow, compile in ((eager_flow, False), (compiled_flow, True)):
        step = TrainStep(flow, make_optimizer(flow, 1e-3, 0.0), device=device, compile=compile,
                         label_drop=0.0 if labels is None else 0.5)
        loss = step(images, 0, 1e-3, labels)
        grads = [p.grad.clone() for p in flow.parameters()]
        results.append((loss, grads))
    (eager_loss, eager_grads), (compiled_loss, compiled_grads) = results
    assert abs(eager_loss.item() - compiled_loss.item()) < 1e-4
    # rounding noise scales with the largest gradient, not with each tensor's own (a GPU's
    # reduction order left 1e-6 on a tensor whose largest gradient was 4e-4)
    scale = max(grad.abs().max() for grad in eager_grads)
    for eager, compiled in zip(eager_grads, compiled_grads, strict=True):
        assert (eager - compiled).abs().max() < 1e-3 * scale
    # Adam's first update is lr * sign(gradient): the same wherever that sign is settled
    pairs = zip(eager_flow.parameters(), compiled_flow.parameters(), eager_grads, strict=True)
    for eager, compiled, grad in pairs:
        settled = grad.abs() > 1e-2 * scale
        assert torch.allclose(eager[settled], compiled[settled], atol=1e-5)


def test_every_layer_of_a_deep_glow_runs_compiled():
    """Four levels of two steps, trained and then evaluated: sixteen variants of the one
    compiled forward, past dynamo's default limit of eight, beyond which it would run the
    rest eagerly."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    flow = build_model(load_config(None, [*TINY["glow"], "model.levels=4"]).model, (1, 16, 16), 17)
    images = torch.randint(0, 17, (4, 1, 16, 16), dtype=torch.uint8)
    flow.train()
    with torch.no_grad():
        flow.bpd(images)  # ActNorm's data-dependent initialisation, eagerly
    compile_regions(flow, backend="aot_eager")
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        flow.bpd(images).mean().backward()
        flow.eval()
        with torch.no_grad():
            flow.bpd(images)
    assert all(p.grad is not None for p in flow.parameters())


def test_the_optimizer_updates_every_parameter_in_one_fused_call():
    flow, images, _ = trained_like("mixerflow")
    step = TrainStep(flow, make_optimizer(flow, 1e-3, 0.0), device=CPU)
    step(images, 0, 1e-3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(images, 1, 1e-3)
    names = [event.name for event in prof.events()]
    assert names.count("aten::_fused_adam_") == 1
    per_tensor = [n for n in names if n in ("aten::addcmul_", "aten::lerp_", "aten::sqrt")]
    assert not per_tensor  # no per-parameter Adam arithmetic besides the fused kernel


def test_the_average_of_the_weights_follows_its_decay_by_hand():
    """After steps with weights w1, w2, w3 the average is d (d w1 + (1-d) w2) + (1-d) w3."""
    flow, images, _ = trained_like("mixerflow")
    decay = 0.75
    step = TrainStep(flow, make_optimizer(flow, 1e-2, 0.0), device=CPU, ema=decay)
    expected = None
    for index in range(3):
        step(images, index, 1e-2)
        weights = [p.detach().clone() for p in flow.parameters()]
        expected = weights if expected is None else [
            decay * e + (1 - decay) * w for e, w in zip(expected, weights, strict=True)]
    averaged = list(step.average.module.parameters())
    for by_hand, average in zip(expected, averaged, strict=True):
        torch.testing.assert_close(average, by_hand, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(a, w) for a, w in zip(averaged, flow.parameters(), strict=True))
    assert int(step.average.n_averaged) == 3


def test_training_and_the_benchmark_run_the_same_step(tmp_path, monkeypatch):
    calls = []
    original = TrainStep.__call__

    def counted(self, images, index, lr, labels=None):
        calls.append(images.shape[0])
        return original(self, images, index, lr, labels)

    monkeypatch.setattr(TrainStep, "__call__", counted)
    cfg = load_config(None, [*STEPPED["mixerflow"], "data.val_size=137", "train.steps=3",
                             "train.batch_size=16", "train.init_batch_size=64",
                             "log.num_samples=4", f"log.out_dir={tmp_path / 'run'}"])
    train(cfg, show_progress=False)
    assert calls == [16] * 3
    calls.clear()
    row = bench.measure_training(vars(cfg.model), (1, 8, 8), batch_size=4, steps=2)
    # one for the FLOP count, two for the op counts, one warm-up, two timed
    assert calls == [4] * 6
    assert row["flops_per_image"] > 0 and 0 < row["mfu"] < 1.5
    assert row["kernel_ops_per_step"] < row["aten_ops_per_step"]
