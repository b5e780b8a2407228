"""`hemseg lab scale`: how close a physical model's own estimate of the pixel size comes to the truth.

Slices of known pixel size are resized by each zoom and handed to ``estimate_pixel_size`` without it; the table
gives, per zoom, the median of estimate / truth and the share of slices within 15 % and 30 % of the truth, and the
median before the model's ``scale_bias`` correction: on validation slices, the figure to keep as ``scale_bias`` in
the ``preprocessing`` of the model's config.json.
"""

from __future__ import annotations

import argparse

import numpy as np
from skimage.transform import resize

from hemseg.data.dataset import add_data_options, load, select_split
from hemseg.inference import scale
from hemseg.inference.segmenter import Segmenter, add_model_options

ZOOMS = (0.5, 1.0, 2.0)


def scale_table(segmenter: Segmenter, dataset, split: str, slices: int, zooms=ZOOMS) -> list[dict]:
    """One row per zoom over ``slices`` slices spread evenly over the split (square pixels only)."""
    if not segmenter.physical:
        raise ValueError(f"{segmenter.source} fits slices to a square grid: it has no pixel size to estimate")
    rows = select_split(dataset, split).with_format("numpy")
    picked = np.unique(np.linspace(0, len(rows) - 1, min(slices, len(rows))).round().astype(int))
    bias = segmenter.model.preprocessing.get("scale_bias", 1.0)
    table = []
    for zoom in zooms:
        ratios = []
        for i in picked:
            row = rows[int(i)]
            image, (row_mm, col_mm) = row["image"], (float(v) for v in row["spacing"])
            if row_mm != col_mm:
                continue
            shape = (max(1, round(image.shape[0] * zoom)), max(1, round(image.shape[1] * zoom)))
            zoomed = resize(image.astype(np.float64), shape, anti_aliasing=zoom < 1, preserve_range=True)
            ratios.append(scale.estimate_pixel_size(segmenter, zoomed) / (row_mm / zoom))
        ratios = np.asarray(ratios)
        table.append(
            {
                "zoom": zoom,
                "slices": len(ratios),
                "median_ratio": float(np.median(ratios)),
                "within_15": float(np.mean(np.abs(ratios - 1) <= 0.15)),
                "within_30": float(np.mean(np.abs(ratios - 1) <= 0.30)),
                "median_ratio_uncorrected": float(np.median(ratios) * bias),
            }
        )
    return table


def markdown(table: list[dict]) -> str:
    lines = [
        "| zoom | slices | median estimate / truth | within 15 % | within 30 % | median before the bias correction |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in table:
        lines.append(
            f"| {row['zoom']:g} | {row['slices']} | {row['median_ratio']:.3f} | {row['within_15']:.2f} | "
            f"{row['within_30']:.2f} | {row['median_ratio_uncorrected']:.3f} |"
        )
    return "\n".join(lines)


def add_scale_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("scale", help="a physical model's pixel-size estimate against the truth")
    add_data_options(parser, split="val")
    parser.add_argument("--slices", type=int, default=60, help="slices spread over the split (default %(default)s)")
    add_model_options(parser)
    parser.set_defaults(command=run_scale)


def run_scale(args: argparse.Namespace) -> int:
    segmenter = Segmenter.load(args.model, precision=args.precision)
    table = scale_table(segmenter, load(args.data), args.split, args.slices)
    bias = segmenter.model.preprocessing.get("scale_bias", 1.0)
    print(f"model {segmenter.source}, data {args.data}, split {args.split}, scale_bias {bias:g}\n")
    print(markdown(table))
    return 0
