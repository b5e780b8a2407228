"""`hemseg lab ceilings`: what a perfect model could score on a slice folder, before any training.

Dice_fg (the mean Dice of the slices whose truth is not empty) of near-perfect predictions, per label and plane:

- **grid S**: each truth mask put on an S x S model grid the way training sees it (``to_model_grid``, nearest)
  and brought back the way predictions are (``from_model_grid``, bilinear, then >= 0.5). What the grid's
  resolution alone costs a model that is right on every grid pixel.
- **adjacent slice**: each truth scored against the truth of the slices one voxel before and after it (mean of
  the two), cut from the source volume's label map. What a one-slice error in placing an edge costs: the masks of
  edge slices change quickly from slice to slice. Only for labels stored in the source volumes (vertebral bodies);
  the simulated lesions are made per slice folder and not kept in 3D.
- **1 px grown** / **1 px shrunk**: each truth against itself grown or shrunk by one pixel on every edge
  (4-connected dilation or erosion). What a model whose outlines are everywhere one pixel off scores: the bar
  a quality target sets on outline accuracy, for small masks most of all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from hemseg.data.dataset import add_data_options, label_names, load, select_split
from hemseg.data.volumes import PLANE_AXIS, PLANES, cut, read_volume
from hemseg.metrics import overlap_scores
from hemseg.preprocessing import from_model_grid, to_model_grid

VOLUME_LABEL = "vertebral_body"  # the label that is the source volumes' label map (> 0)
FOUR = ndimage.generate_binary_structure(2, 1)  # a one-pixel step across an edge, not a corner


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|P∩T| / (|P| + |T|), with ``overlap_scores``' rule: 1.0 when both are empty."""
    tp = int((pred & truth).sum())
    return overlap_scores(tp, int(pred.sum()) - tp, int(truth.sum()) - tp)["dice"]


def grid_dice(mask: np.ndarray, size: int) -> float:
    """Dice of a binary mask against itself after a round trip through a ``size`` x ``size`` model grid."""
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    on_grid = to_model_grid(x, (size, size), mode="nearest")
    back = from_model_grid(on_grid, mask.shape)[0, 0].numpy() >= 0.5
    return dice(back, mask)


def outline_dice(mask: np.ndarray, grow: bool) -> float:
    """Dice of a binary mask against itself grown (``grow``) or else shrunk by one pixel on every edge."""
    moved = ndimage.binary_dilation(mask, FOUR) if grow else ndimage.binary_erosion(mask, FOUR)
    return dice(moved, mask)


def adjacent_dice(label: np.ndarray, plane: str, index: int) -> float:
    """Mean Dice of slice ``index``'s mask against the masks one slice before and after it (those that exist)."""
    truth = cut(label, plane, index)
    depth = label.shape[PLANE_AXIS[plane]]
    return float(np.mean([dice(cut(label, plane, j), truth) for j in (index - 1, index + 1) if 0 <= j < depth]))


def ceilings(folder: Path, split: str | None, sizes: list[int]) -> dict[str, dict[str, dict[str, float]]]:
    """{label: {plane and "overall": {"grid S": Dice_fg, ..., "adjacent slice": Dice_fg, "n_fg": count}}}."""
    dataset = select_split(load(folder), split)
    cases = json.loads((folder / "dataset.json").read_text())["cases"]
    labels = label_names(dataset)
    plane_names = dataset.features["plane"].names
    scores: dict[str, dict[str, dict[str, list[float]]]] = {label: {} for label in labels}
    volumes: dict[str, np.ndarray] = {}
    for row in dataset.with_format("numpy"):
        plane = plane_names[row["plane"]]
        for label in labels:
            mask = row[label] > 0
            if not mask.any():
                continue
            values = {f"grid {size}": grid_dice(mask, size) for size in sizes}
            values |= {"1 px grown": outline_dice(mask, True), "1 px shrunk": outline_dice(mask, False)}
            if label == VOLUME_LABEL:
                case = str(row["case"])
                if case not in volumes:
                    volumes[case] = _label_volume(case, cases[case])
                values["adjacent slice"] = adjacent_dice(volumes[case], plane, int(row["index"]))
            for group in (plane, "overall"):
                for key, value in values.items():
                    scores[label].setdefault(group, {}).setdefault(key, []).append(value)
    order = [*PLANES, "overall"]
    return {label: {g: _means(by[g]) for g in order if g in by} for label, by in scores.items()}


def _means(values: dict[str, list[float]]) -> dict[str, float]:
    return {key: float(np.mean(v)) for key, v in values.items()} | {"n_fg": len(next(iter(values.values())))}


def _label_volume(case: str, paths: dict[str, str]) -> np.ndarray:
    """The case's label map (> 0) from the paths dataset.json gives, relative to where prepare ran."""
    if not (Path(paths["image"]).exists() and Path(paths["label"]).exists()):
        raise FileNotFoundError(
            f"{case}: source volume {paths['label']} not found; run from the folder where prepare ran"
        )
    return read_volume(paths["image"], paths["label"]).label > 0


def markdown(result: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = []
    for label, by_group in result.items():
        columns = sorted({key for values in by_group.values() for key in values} - {"n_fg"}, key=_column_order)
        lines += [f"**{label}** (Dice_fg of a perfect model)", ""]
        lines.append("| plane | " + " | ".join(columns) + " | slices with label |")
        lines.append("|" + " --- |" * (len(columns) + 2))
        for group, values in by_group.items():
            cells = [f"{values[c]:.3f}" if c in values else "n/a" for c in columns]
            lines.append(f"| {group} | " + " | ".join(cells) + f" | {values['n_fg']} |")
        lines.append("")
    return "\n".join(lines)


def _column_order(column: str) -> tuple[int, int]:
    if column.startswith("grid "):
        return (0, int(column.split()[1]))
    return (1, 0) if column == "adjacent slice" else (2, int(column.endswith("shrunk")))


def add_ceilings_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "ceilings", help="Dice_fg a perfect model could reach: through the model grid, one slice off, one pixel off"
    )
    add_data_options(parser, split="val", data_help="slice folder made by `python -m hemseg prepare`")
    parser.add_argument("--sizes", default="128,160,192,256", help="comma-separated model grid sides")
    parser.set_defaults(command=run_ceilings)


def run_ceilings(args: argparse.Namespace) -> int:
    folder = Path(args.data)
    if not (folder / "dataset.json").exists():
        raise ValueError(f"{folder}: not a slice folder made by `python -m hemseg prepare` (no dataset.json)")
    sizes = [int(s) for s in args.sizes.split(",")]
    print(markdown(ceilings(folder, args.split, sizes)))
    return 0
