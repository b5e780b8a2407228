"""`python -m hemseg lab calibrate`: what each seed threshold does on a split, and the one `train.py` would choose
(``hemseg.evaluation.seeds``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hemseg.data.dataset import add_data_options, load
from hemseg.evaluation.seeds import COLUMNS, choose_seeds, seed_table
from hemseg.files import write_csv
from hemseg.inference.segmenter import Segmenter, add_model_options


def markdown(table: list[dict], chosen: dict[str, float]) -> str:
    head = "| label | seed | Dice_fg | pooled Dice | false-alarm rate | lesion precision | lesion recall | lesion F1 |"
    lines = [head, "|" + " --- |" * 8]
    for row in table:
        mark = " (chosen)" if chosen.get(row["label"]) == row["seed"] and row["seed"] is not None else ""
        seed = "none" if row["seed"] is None else f"{row['seed']:g}"
        lines.append(f"| {row['label']} | {seed}{mark} | " + " | ".join(f"{row[k]:.3f}" for k in COLUMNS) + " |")
    return "\n".join(lines)


def add_calibrate_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "calibrate", help="what seed thresholds (keep a lesion only where the model is this sure) do on a split"
    )
    add_data_options(parser, split="val")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    add_model_options(parser)
    parser.set_defaults(command=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    segmenter = Segmenter.load(args.model, precision=args.precision, tta=args.tta)
    table = seed_table(segmenter, load(args.data), args.split)
    chosen = choose_seeds(table)
    print(f"model {segmenter.source}, threshold {segmenter.model.threshold}, data {args.data}, split {args.split}\n")
    print(markdown(table, chosen))
    in_use = segmenter.model.seed_thresholds or "none"
    print(f"\nhighest pooled Dice: {chosen or 'no seed'}; the model's own seed thresholds: {in_use}")
    if args.csv:
        write_csv(Path(args.csv), table)
    return 0
