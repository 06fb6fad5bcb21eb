"""``mixerflow campaign``: the GPU campaign (bench and compare on CIFAR-10) in one command."""

import argparse

from mixerflow.cli import common
from mixerflow.core.errors import UserError
from mixerflow.experiments import campaign


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "campaign", help="GPU campaign: bench (eager/compiled x fp32/bf16) and compare on CIFAR-10",
        description="Bench MixerFlow and a parameter-matched Glow on the CIFAR-10 configs "
        "(eager and compiled, fp32 and bf16), then train both for --minutes each; writes a "
        "report folder. Each part resumes where a previous run stopped.",
        epilog="Any further key.sub=value arguments override both configs.")
    parser.add_argument("--out", help="report folder (default docs/gpu_campaign; "
                        "reports/campaign_smoke with --smoke)")
    parser.add_argument("--parts", default="bench,compare", help="bench, compare or both")
    parser.add_argument("--minutes", type=float, help="training budget per model (default 3)")
    parser.add_argument("--smoke", action="store_true",
                        help="the same path on the CPU with a tiny model on the digits")
    common.add_data_root(parser)
    parser.set_defaults(run=run, takes_overrides=True)


def run(args: argparse.Namespace) -> None:
    parts = common.choices(args.parts, campaign.PARTS, "--parts")
    common.positive_minutes(args.minutes)
    if args.data_root and "compare" not in parts:
        raise UserError("--data-root has no effect here: the bench part reads no data "
                        "(only --parts compare does)")
    default = "reports/campaign_smoke" if args.smoke else "docs/gpu_campaign"
    out = common.report_folder(default if args.out is None else args.out,
                               {"report.md", "bench", "compare"})
    campaign.run_campaign(out, args.smoke, parts, args.minutes, common.overrides(args),
                          args.command_line)
    print(f"campaign report: {out / 'report.md'}")
