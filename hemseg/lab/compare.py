"""`hemseg lab compare`: a markdown table comparing training runs by their validation scores.

    python -m hemseg lab compare runs/unet8-checkpoints runs/unet16-checkpoints

Each RUN is the ``<output-dir>-checkpoints`` folder that train.py keeps: its ``run.json`` gives the recipe and its
``training_log.csv`` the validation scores of every epoch (on the model grid). The table shows the epoch with the
best validation score by the recipe's ``validation.select_by`` (mean pooled Dice by default), among the epochs that
logged it (the ``validation.noise`` columns start at the epoch that first had it). A run resumed with another score
chose only among the epochs after the resume, which the log does not record.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from hemseg.model import UNet, count_parameters
from hemseg.training.checkpoints import RUN_FILE
from hemseg.training.recipe import Recipe
from hemseg.training.state import read_log, selection_score


def comparison_table(runs: list[str]) -> str:
    rows = []
    labels: list[str] = []
    for run in map(Path, runs):
        settings = json.loads((run / RUN_FILE).read_text())
        if "recipe" not in settings:
            raise ValueError(f"{run / RUN_FILE} is from a run made before recipes; compare reads runs made since")
        recipe = Recipe.from_dict(settings["recipe"])
        model, training = recipe.model, recipe.training
        labels = list(model.labels)
        log = read_log(run / "training_log.csv")
        scores = [selection_score(row, labels, recipe.validation.select_by) for row in log]
        best = log[max((i for i, score in enumerate(scores) if not math.isnan(score)), key=scores.__getitem__)]
        params = count_parameters(UNet(1, len(labels), model.base_channels, model.depth, labels=labels))
        seconds = sum(row["seconds"] for row in log) / len(log)
        cells = [
            run.name.removesuffix("-checkpoints"),
            str(model.base_channels),
            str(model.depth),
            f"{params / 1e6:.2f}",
            f"{params * 4 / 2**20:.1f}",
            f"{training.loss}, lr {training.lr:g}",
            f"{best['epoch']} of {len(log)}",
            f"{seconds:.1f}",
        ]
        for label in labels:
            cells += [f"{best[f'val_{label}_all_dice']:.3f}", f"{best[f'val_{label}_all_dice_fg']:.3f}"]
        rows.append("| " + " | ".join(cells) + " |")
    head = ["run", "base filters", "depth", "parameters (M)", "fp32 MiB", "loss", "best epoch", "s/epoch"]
    for label in labels:
        head += [f"{label} pooled Dice", f"{label} Dice_fg"]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + " --- |" * len(head), *rows])


def add_compare_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("compare", help="markdown table of training runs' validation scores")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="<output-dir>-checkpoints folders of train.py runs")
    parser.set_defaults(command=lambda args: print(comparison_table(args.runs)) or 0)
