"""``mixerflow campaign``: the GPU benchmark campaign in one command.

1. ``bench``: the training step of MixerFlow and of a Glow matched to its parameter count
   on the CIFAR-10 configs, eager and compiled, float32 and bf16: images/s, ops per step,
   FLOPs, MFU against the device's measured matrix-product peak, peak memory.
2. ``compare``: both models trained for ``minutes`` each on CIFAR-10 with the same data,
   optimiser, seed and budget (``mixerflow compare``).

It writes ``bench/``, ``compare/`` and a summary ``report.md`` under the output folder.
The bench part needs no data (random images of CIFAR-10's shape); compare needs
``cifar10/{train,test}.npz`` under ``--data-root``.
Every part resumes: finished bench rows and finished runs are reused, so the campaign
can be run a part at a time (``--parts bench``, then ``--parts compare``) where one
command may only run for a few minutes. ``--smoke`` runs the same path on the CPU with a
tiny model on the bundled digits, in seconds, for the tests.
"""

import dataclasses
from pathlib import Path

from mixerflow.core.files import atomic_write_text
from mixerflow.data.splits import image_shape_of
from mixerflow.experiments import bench, compare
from mixerflow.models.flow import build_model, count_parameters
from mixerflow.training.config import Config, load_configs, shipped_config

PARTS = ("bench", "compare")
CONFIGS = {"mixerflow": "cifar10_mixerflow.yaml", "glow": "cifar10_glow.yaml"}  # shipped
SMOKE_OVERRIDES = [
    "data.name=digits", "data.val_size=137", "model.patch_size=2", "model.blocks=2",
    "model.channel_hidden=16", "model.patch_hidden=16", "model.levels=2",
    "model.steps_per_level=2", "train.batch_size=8", "train.init_batch_size=64",
    "train.eval_every=1000", "train.eval_batch_size=500", "train.device=cpu",
    "log.num_samples=4",
]
HEADLINE = ("mixerflow", "compiled", "bf16")  # the figure the campaign is run for


@dataclasses.dataclass
class Plan:
    """What one campaign measures: sizes and budgets, full or smoke."""

    batch_size: int = 256
    timed_steps: int = 20
    minutes: float | None = 3.0
    steps: int | None = None
    device: str = "auto"
    compile_backend: str = "inductor"


# aot_eager: the same graph capture as inductor, without minutes of C++ kernel generation
SMOKE_PLAN = Plan(batch_size=4, timed_steps=1, minutes=None, steps=3, device="cpu",
                  compile_backend="aot_eager")


def campaign_configs(smoke: bool, overrides: list[str]) -> dict:
    """MixerFlow's CIFAR-10 config and a Glow of matched parameters (``compare``'s rule)."""
    extra = [*(SMOKE_OVERRIDES if smoke else []), *overrides]
    paths = [shipped_config(name) for name in CONFIGS.values()]
    return compare.fair_configs(dict(zip(CONFIGS, load_configs(paths, extra), strict=True)))


def run_campaign(
    out: Path,
    smoke: bool = False,
    parts: tuple[str, ...] = PARTS,
    minutes: float | None = None,
    overrides: list[str] = (),
    command: str = "mixerflow campaign",
) -> dict:
    """Run the chosen ``parts`` into ``out``; returns the summary (also ``report.md``).
    ``overrides``: ``key=value`` settings for both configs (``data.root=DIR`` among them)."""
    plan = dataclasses.replace(SMOKE_PLAN if smoke else Plan())
    if minutes is not None:
        plan.minutes, plan.steps = minutes, None
    configs = campaign_configs(smoke, list(overrides))
    shape = image_shape_of(configs["mixerflow"].data)
    summary: dict = {"smoke": smoke}
    if "bench" in parts:
        report = bench.run_benchmark(
            {name: cfg.model for name, cfg in configs.items()}, [shape], plan.batch_size,
            plan.timed_steps, plan.device, precisions=("fp32", "bf16"),
            modes=bench.MODES, cache=out / "bench" / "rows.jsonl",
            compile_backend=plan.compile_backend,
        )
        bench.write_benchmark(report, out / "bench", command)
        summary["bench"] = report
    if "compare" in parts:
        budgeted = {name: compare.with_budget(cfg, plan.minutes, plan.steps)
                    for name, cfg in configs.items()}
        report = compare.compare(budgeted, [0], out / "compare", show_progress=not smoke)
        compare.write_report(report, out / "compare", command)
        summary["compare"] = report
    atomic_write_text(out / "report.md", summary_markdown(summary, configs, shape, command))
    return summary


def headline_row(report: dict) -> dict | None:
    """The bench row of the bf16 compiled MixerFlow step, if it was measured."""
    for row in report["rows"]:
        if (row["name"], row["mode"], row["precision"]) == HEADLINE:
            return row
    return None


def summary_markdown(
    summary: dict, configs: dict[str, Config], shape: tuple[int, int, int], command: str
) -> str:
    lines = ["# GPU campaign" + (" (smoke run)" if summary["smoke"] else ""), "",
             f"Command: `{command}`", ""]
    if "bench" in summary:
        report = summary["bench"]
        row = headline_row(report)
        if row is not None:
            achieved, peak = row["achieved_flops_per_s"], row["peak_flops_per_s"]
            lines += [f"**Headline: the bf16 compiled MixerFlow training step runs at "
                      f"{100 * row['mfu']:.1f} % MFU** ({bench.flops_text(achieved)}"
                      f" of {bench.flops_text(peak)}, the faster of a bf16 and a float32 "
                      f"matrix product) on {report['device']}, {row['images_per_s']:.0f} "
                      f"images/s at batch {report['batch_size']}.", ""]
        lines += ["Bench: [bench/report.md](bench/report.md)", ""]
    if "compare" in summary:
        lines += ["Comparison: [compare/report.md](compare/report.md)", ""]
    params = ", ".join(f"{name} {count_parameters(build_model(cfg.model, shape, 256)):,}"
                       for name, cfg in configs.items())
    lines += [f"Parameters: {params} (Glow's width matched to MixerFlow's parameter count, "
              f"hidden_channels {configs['glow'].model.hidden_channels}).", ""]
    return "\n".join(lines)
