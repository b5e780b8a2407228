"""The `hemseg lab` group: tools that measure models and runs rather than serve users."""

from __future__ import annotations

import argparse

from hemseg.lab.bench import add_bench_command
from hemseg.lab.calibrate import add_calibrate_command
from hemseg.lab.ceilings import add_ceilings_command
from hemseg.lab.compare import add_compare_command
from hemseg.lab.robustness import add_robustness_command
from hemseg.lab.scale import add_scale_command
from hemseg.lab.stress import add_stress_command


def add_lab_commands(lab: argparse.ArgumentParser) -> None:
    """Register the lab tools under ``lab``; ``lab`` alone prints their list."""
    lab.set_defaults(command=None, group=lab)
    tools = lab.add_subparsers(title="lab tools", metavar="TOOL")
    add_bench_command(tools)
    add_calibrate_command(tools)
    add_ceilings_command(tools)
    add_compare_command(tools)
    add_robustness_command(tools)
    add_scale_command(tools)
    add_stress_command(tools)
