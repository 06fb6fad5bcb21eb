"""``mixerflow compare``: several models trained on the same data and budget, one report."""

import argparse

from mixerflow.cli import common
from mixerflow.core.errors import UserError
from mixerflow.experiments import compare, reports
from mixerflow.training.config import config_names, load_configs, shipped_config

COMPARED = ("quickstart.yaml", "quickstart_glow.yaml")  # the default pair, from configs/


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "compare", help="train several models on the same data and budget; write a report",
        description="Data, training and logging settings come from the first --model config; "
        "each config gives its model section, its width matched to the first's parameters.",
        epilog=common.OVERRIDES_EPILOG)
    parser.add_argument("--model", action="append", metavar="CONFIG",
                        help=f"a model's YAML config; repeat for each model (default: "
                        f"configs/{' and configs/'.join(COMPARED)}); the report names it by the "
                        "file's stem")
    parser.add_argument("--minutes", type=float, help="training budget per model (wall clock)")
    parser.add_argument("--steps", type=int, help="training budget per model (steps)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--no-match-params", action="store_true",
                        help="keep every model's widths as written")
    parser.add_argument("--out", default="reports/compare", help="report folder")
    common.add_data_root(parser)
    common.add_no_progress(parser)
    parser.set_defaults(run=run, takes_overrides=True)


def run(args: argparse.Namespace) -> None:
    common.positive_minutes(args.minutes)
    paths = args.model or [shipped_config(name) for name in COMPARED]
    if len(paths) < 2:
        raise UserError("compare needs at least two --model configs")
    named = dict(zip(config_names(paths), load_configs(paths, common.overrides(args)),
                     strict=True))
    out = common.report_folder(args.out, {"report.json", "report.md", "bpd_vs_time.png", "runs"})
    configs = compare.fair_configs(named, match_params=not args.no_match_params)
    for note in (compare.recipe_note(configs), compare.conditioning_note(configs)):
        if note:
            print(note)
    configs = {name: compare.with_budget(cfg, args.minutes, args.steps)
               for name, cfg in configs.items()}
    seeds = common.numbers(args.seeds, int, "--seeds")
    report = compare.compare(configs, seeds, out, show_progress=not args.no_progress)
    reports.write_report(report, out, args.command_line)
