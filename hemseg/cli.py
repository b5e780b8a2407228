"""The `hemseg` command line (`python -m hemseg`): the four jobs a user runs, and the lab tools apart."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from hemseg.data.prepare import add_prepare_command
from hemseg.evaluation.evaluate import add_evaluate_command
from hemseg.inference.predict import add_predict_command
from hemseg.lab.cli import add_lab_commands
from hemseg.training.run import add_train_command
from hemseg.version import __version__

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hemseg",
        description="Segmentation of spine hemangiomas in MRI slices with the paper's U-Net.",
        epilog="The lab tools (benchmarks, robustness, seed calibration, run comparison): hemseg lab --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hemseg {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_prepare_command(subcommands)
    add_train_command(subcommands)
    add_predict_command(subcommands)
    add_evaluate_command(subcommands)
    lab = subcommands.add_parser(
        "lab", help="tools for research on the models: bench, calibrate, ceilings, compare, robustness, scale, stress"
    )
    add_lab_commands(lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "command", None)
    if command is None:
        (getattr(args, "group", None) or parser).print_help()
        return 0
    try:
        return command(args)
    except (ValueError, OSError) as err:
        # Bad input is the user's to fix (a wrong file, an output path that is a file): one clear line, no traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C: what was done and kept, in one line (the commands say it)
        print("interrupted" + (f": {err}" if str(err) else ""), file=sys.stderr)
        return 130
