"""`python -m hemseg compare`: a markdown table comparing training runs on their validation cases.

    python -m hemseg compare runs/unet8 runs/unet16 runs/unet32 runs/unet64

Reads each run's metrics.json (validation split, evaluated at each slice's own resolution by train.py) and
config.json; the epoch times come from training_log.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from hemseg.model import UNet, count_parameters


def row(run: Path) -> str:
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    with open(run / "training_log.csv") as f:
        seconds = sum(float(r["seconds"]) for r in csv.DictReader(f))
    val = metrics["val"]
    params = count_parameters(UNet(**config))
    cells = [
        run.name,
        str(config["base_channels"]),
        f"{params / 1e6:.2f}",
        f"{params * 4 / 2**20:.1f}",
        f"{metrics['best_epoch']}/{metrics['epochs_run']}",
        f"{seconds:.0f}",
    ]
    for label in config["labels"]:
        overall = val[label]["overall"]
        cells += [f"{overall['dice_fg']:.3f}", f"{overall['pooled_dice']:.3f}"]
    cells.append(f"{val['hemangioma']['overall']['lesion_f1']:.3f}" if "hemangioma" in val else "n/a")
    return "| " + " | ".join(cells) + " |"


def comparison_table(runs: list[str]) -> str:
    labels = json.loads((Path(runs[0]) / "config.json").read_text())["labels"]
    head = ["run", "base filters", "parameters (M)", "fp32 MiB", "best/run epochs", "train s"]
    for label in labels:
        head += [f"{label} Dice_fg", f"{label} pooled Dice"]
    head.append("lesion F1")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join(lines + [row(Path(run)) for run in runs])


def add_compare_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("compare", help="markdown table of training runs' validation scores")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="model folders written by train.py")
    parser.set_defaults(command=lambda args: print(comparison_table(args.runs)) or 0)
