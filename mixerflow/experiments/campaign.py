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
from mixerflow.experiments import bench, compare, reports
from mixerflow.training.config import load_configs, shipped_config

PARTS = ("bench", "compare")
CONFIGS = {"mixerflow": "cifar10_mixerflow.yaml", "glow": "cifar10_glow.yaml"}  # shipped
SMOKE_OVERRIDES = [
    "data.name=digits", "data.val_size=137", "model.patch_size=2", "model.blocks=2",
    "model.channel_hidden=16", "model.patch_hidden=16", "model.levels=2",
    "model.steps_per_level=2", "train.batch_size=8", "train.init_batch_size=64",
    "train.eval_every=1000", "train.eval_batch_size=500", "train.device=cpu",
    "log.num_samples=4",
]


# the headline (bf16 compiled) row is measured first, so a bench cut short by a time
# limit has it; every finished row is kept in rows.jsonl for the rerun
HEADLINE_FIRST = {"modes": ("compiled", "eager"), "precisions": ("bf16", "fp32")}


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
            plan.timed_steps, plan.device, precisions=HEADLINE_FIRST["precisions"],
            modes=HEADLINE_FIRST["modes"], cache=out / "bench" / "rows.jsonl",
            compile_backend=plan.compile_backend,
        )
        reports.write_benchmark(report, out / "bench", command)
        summary["bench"] = report
    if "compare" in parts:
        budgeted = {name: compare.with_budget(cfg, plan.minutes, plan.steps)
                    for name, cfg in configs.items()}
        report = compare.compare(budgeted, [0], out / "compare", show_progress=not smoke)
        reports.write_report(report, out / "compare", command)
        summary["compare"] = report
    atomic_write_text(out / "report.md",
                      reports.summary_markdown(summary, configs, shape, command))
    return summary
