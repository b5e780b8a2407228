"""`hemseg lab robustness`: how a model's scores move when the images change the way another scanner or
sequence changes them (noise, intensity curve, resolution, slice thickness, bias field, reversed contrast).

Each shift is applied to every slice of a split as it is stored (before the model's own preprocessing), the slice
is cast back to its own integer type, and the split is scored as ``calibrate`` scores it (``seed_table``, with the
model's own seeds). The truth is unchanged: no shift moves anatomy. Noise is deterministic per slice (seeded by its
position in the split).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
from skimage.transform import resize

from hemseg.data.dataset import add_data_options, load, select_split
from hemseg.evaluation.seeds import seed_table
from hemseg.files import write_csv
from hemseg.inference.segmenter import Segmenter, add_model_options
from hemseg.preprocessing import DEFAULT_PREPROCESSING

Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]
COLUMNS = ("dice_fg", "pooled_dice", "slice_false_alarm_rate", "lesion_f1")


def _spread(image: np.ndarray) -> float:
    """The range the default preprocessing scales to [0, 1]: 0.5th to 99.5th percentile."""
    low, high = np.percentile(image, DEFAULT_PREPROCESSING["percentiles"])
    return max(float(high - low), 1.0)


def noise(sd: float) -> Shift:
    """Gaussian noise of ``sd`` times the slice's percentile range (0.1 is sd 13 grey levels on a typical slice)."""
    return lambda image, rng: image + rng.normal(0.0, sd * _spread(image), image.shape)


def gamma(power: float) -> Shift:
    """Intensities (scaled to [0, 1] by the slice's maximum) raised to ``power``: below 1 brightens the darks."""
    return lambda image, rng: image.max() * (image / max(float(image.max()), 1.0)) ** power


def coarser(rows: int, cols: int) -> Shift:
    """Down to 1/``rows`` of the rows and 1/``cols`` of the columns (anti-aliased) and back: a coarser acquisition."""

    def shift(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        small = resize(image, (max(image.shape[0] // rows, 1), max(image.shape[1] // cols, 1)), anti_aliasing=True)
        return resize(small, image.shape)

    return shift


half_resolution = coarser(2, 2)
# On sagittal and coronal slices, whose rows run head to foot, a cut across a stack of 3 mm axial slices; on axial
# ones, a coarser front-to-back resolution.
thick_slices = coarser(3, 1)


def bias_field(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative ramp, 0.61x to 1.62x corner to corner on a square slice: coil sensitivity."""
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]] / max(image.shape)
    return image * np.exp(0.6 * (cols - 0.5) + 0.4 * (rows - 0.5))


def inverted(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark for bright: far beyond any augmentation, the extreme of a sequence with other contrast."""
    return image.max() + image.min() - image


SHIFTS: dict[str, Shift] = {
    "none": lambda image, rng: image,
    "noise 0.04": noise(0.04),
    "noise 0.08": noise(0.08),
    "noise 0.12": noise(0.12),
    "gamma 0.5": gamma(0.5),
    "gamma 2": gamma(2.0),
    "half resolution": half_resolution,
    "thick slices": thick_slices,
    "bias field": bias_field,
    "inverted": inverted,
}


def shifted(image: np.ndarray, shift: Shift, rng: np.random.Generator) -> np.ndarray:
    """``shift`` applied in floating point, then clipped and cast back to the image's own integer type."""
    out = shift(image.astype(np.float64), rng)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.round(out), info.min, info.max).astype(image.dtype)
    return out.astype(image.dtype)


def robustness_table(
    segmenter: Segmenter,
    dataset: datasets.Dataset,
    split: str | None,
    names: list[str],
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """One row per shift and label with the ``COLUMNS`` scores over the split's slices, each label cut with the
    model's own seed threshold (``seed_table``'s row for that seed)."""
    own = segmenter.model.seed_thresholds
    dataset = select_split(dataset, split)  # once, not again for every shift
    table = []
    for name in names:
        rows = seed_table(
            segmenter,
            dataset,
            None,
            candidates=tuple(own.values()),
            progress=progress,
            transform=lambda image, index, shift=SHIFTS[name]: shifted(
                image, shift, np.random.default_rng([seed, index])
            ),
            desc=name,
        )
        table += [
            {"shift": name, "label": row["label"], **{key: row[key] for key in COLUMNS}}
            for row in rows
            if row["seed"] == own.get(row["label"])
        ]
    return table


def markdown(table: list[dict]) -> str:
    lines = [
        "| shift | label | Dice_fg | change | pooled Dice | false-alarm rate | lesion F1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    clean = {row["label"]: row["dice_fg"] for row in table if row["shift"] == "none"}
    for row in table:
        change = f"{row['dice_fg'] - clean[row['label']]:+.3f}" if row["label"] in clean else "n/a"
        values = " | ".join(f"{row[key]:.3f}" for key in COLUMNS[1:])
        lines.append(f"| {row['shift']} | {row['label']} | {row['dice_fg']:.3f} | {change} | {values} |")
    return "\n".join(lines)


def add_robustness_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "robustness", help="scores of a model on a split under scanner- and sequence-like image shifts"
    )
    add_data_options(parser, split="val")
    parser.add_argument(
        "--shifts",
        nargs="+",
        choices=list(SHIFTS),
        default=list(SHIFTS),
        metavar="SHIFT",
        help=f"which shifts (default: all): {', '.join(repr(name) for name in SHIFTS)}",
    )
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    add_model_options(parser)
    parser.set_defaults(command=run_robustness)


def run_robustness(args: argparse.Namespace) -> int:
    segmenter = Segmenter.load(args.model, precision=args.precision, tta=args.tta)
    names = ["none", *[name for name in args.shifts if name != "none"]]  # the change is against no shift
    table = robustness_table(segmenter, load(args.data), args.split, names)
    print(f"model {segmenter.source}, data {args.data}, split {args.split}\n")
    print(markdown(table))
    if args.csv:
        write_csv(Path(args.csv), table)
    return 0
