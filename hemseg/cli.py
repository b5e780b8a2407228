"""The `python -m hemseg` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from hemseg import __version__
from hemseg.bench import add_bench_command
from hemseg.calibrate import add_calibrate_command
from hemseg.ceilings import add_ceilings_command
from hemseg.compare import add_compare_command
from hemseg.evaluate import add_evaluate_command
from hemseg.predict import add_predict_command
from hemseg.prepare import add_prepare_command
from hemseg.robustness import add_robustness_command

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hemseg",
        description="Segmentation of spine hemangiomas in MRI slices with the paper's U-Net.",
    )
    parser.add_argument("--version", action="version", version=f"hemseg {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_prepare_command(subcommands)
    add_predict_command(subcommands)
    add_evaluate_command(subcommands)
    add_compare_command(subcommands)
    add_bench_command(subcommands)
    add_ceilings_command(subcommands)
    add_calibrate_command(subcommands)
    add_robustness_command(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "command", None)
    if command is None:
        parser.print_help()
        return 0
    try:
        return command(args)
    except (ValueError, OSError) as err:
        # Bad input is the user's to fix (a wrong file, an output path that is a file): one clear line, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
