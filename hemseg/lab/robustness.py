"""`hemseg lab robustness`: how a model's scores move when the images change the way another scanner or
sequence changes them (noise, intensity curve, resolution, slice thickness, bias field, reversed contrast), or the
way a reader hands them over (a crop around the spine; a PNG that has lost its pixel size, zoomed).

Each shift is applied to every slice of a split as it is stored (before the model's own preprocessing), the slice
is cast back to its own integer type, and the split is scored as ``calibrate`` scores it (``seed_table``, with the
model's own seeds). Intensity shifts leave the truth as it is; a crop is scored on the cropped part of the truth; a
zoomed PNG's result is resized back onto the stored slice and scored there. Noise is deterministic per slice
(seeded by its position in the split).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
from skimage.transform import resize

from hemseg.data.dataset import add_data_options, load, select_split
from hemseg.evaluation.evaluate import View
from hemseg.evaluation.seeds import seed_table
from hemseg.files import write_csv
from hemseg.inference.segmenter import Segmenter, add_model_options
from hemseg.preprocessing import DEFAULT_PREPROCESSING

Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # an intensity shift of the image alone
Viewer = Callable[[np.ndarray, tuple[float, float], dict, np.random.Generator], View]  # what the model is shown
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


def shifted(image: np.ndarray, shift: Shift, rng: np.random.Generator) -> np.ndarray:
    """``shift`` applied in floating point, then cast back to the image's own type (``as_type``)."""
    return as_type(shift(image.astype(np.float64), rng), image.dtype)


def as_type(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` in ``dtype``; rounded and clipped to its range when that is an integer type."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def intensity(shift: Shift) -> Viewer:
    """The shifted image, its pixel size and all of it scored."""
    return lambda image, spacing, columns, rng: View(shifted(image, shift, rng), spacing)


def crop(side_mm: float) -> Viewer:
    """A square of ``side_mm`` around the spine (the centre of the labelled vertebral bodies; of the slice when it
    shows none), clamped to the slice: what a reader keeps of a wide field of view. The pixel size is known."""

    def view(image: np.ndarray, spacing, columns: dict, rng: np.random.Generator) -> View:
        bodies = np.argwhere(columns["vertebral_body"] > 0) if "vertebral_body" in columns else np.empty((0, 2))
        centre = bodies.mean(0) if len(bodies) else np.array(image.shape) / 2
        region = []
        for length, middle, pixel_mm in zip(image.shape, centre, spacing, strict=True):
            half = side_mm / pixel_mm / 2
            start = int(np.clip(round(middle - half), 0, max(length - 2 * half, 0)))
            region.append(slice(start, min(length, start + round(2 * half))))
        return View(image[tuple(region)], spacing, (region[0], region[1]))

    return view


def png(zoom: float) -> Viewer:
    """The slice resized by ``zoom`` (anti-aliased when it shrinks) and handed over without its pixel size, as a
    PNG exported at another size; the result is resized back and scored on the stored slice."""

    def view(image: np.ndarray, spacing, columns: dict, rng: np.random.Generator) -> View:
        shape = (max(1, round(image.shape[0] * zoom)), max(1, round(image.shape[1] * zoom)))
        out = resize(image.astype(np.float64), shape, anti_aliasing=zoom < 1, preserve_range=True)
        return View(as_type(out, image.dtype), None)

    return view


SHIFTS: dict[str, Viewer] = {
    "none": intensity(lambda image, rng: image),
    "noise 0.04": intensity(noise(0.04)),
    "noise 0.08": intensity(noise(0.08)),
    "noise 0.12": intensity(noise(0.12)),
    "gamma 0.5": intensity(gamma(0.5)),
    "gamma 2": intensity(gamma(2.0)),
    "half resolution": intensity(half_resolution),
    "thick slices": intensity(thick_slices),
    "bias field": intensity(bias_field),
    "inverted": intensity(inverted),
    "crop 120 mm": crop(120.0),
    "crop 80 mm": crop(80.0),
    "png": png(1.0),
    "png zoom 0.5": png(0.5),
    "png zoom 2": png(2.0),
}


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
            transform=lambda image, index, spacing, columns, viewer=SHIFTS[name]: viewer(
                image, spacing, columns, np.random.default_rng([seed, index])
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
