"""`python -m hemseg evaluate`: per label, per plane and overall metrics at each slice's own resolution."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hemseg.data.dataset import EXTENT_LABELS, add_data_options, label_names, labelled_rows, load, select_split
from hemseg.data.volumes import PLANES, source_of
from hemseg.files import write_csv
from hemseg.inference.segmenter import Segmenter, add_model_options
from hemseg.metrics import contrast_to_noise, json_ready, slice_metrics, summarize

# The paper's Table 4 columns first (Dice, IoU, precision, recall, SSIM), then ours. Overlap scores are pooled
# over the slices' pixel counts; Dice is also given as the mean over slices whose truth is not empty.
TABLE_COLUMNS = (
    ("dice_fg", "Dice (mean, slices with label)"),
    ("pooled_dice", "Dice (pooled)"),
    ("pooled_iou", "IoU (pooled)"),
    ("pooled_precision", "Precision (pooled)"),
    ("pooled_recall", "Recall (pooled)"),
    ("ssim", "SSIM"),
    ("accuracy", "Accuracy"),
    ("hd95", "HD95 (mm)"),
    ("lesion_f1", "Lesion F1"),
    ("n", "Slices"),
    ("n_fg", "With label"),
)


@dataclass
class View:
    """What the model is shown of a stored slice: an image, the pixel size it is told (None: it must estimate one),
    and the part of the stored slice the image covers, at whatever size; the result is resized back onto that part,
    where it is scored."""

    image: np.ndarray
    spacing: tuple[float, float] | None
    region: tuple[slice, slice] = (slice(None), slice(None))


Transform = Callable[[np.ndarray, int, tuple[float, float], dict], View]


def predicted_batches(
    segmenter: Segmenter,
    dataset: datasets.Dataset,
    split: str | None,
    batch_size: int,
    desc: str,
    progress: bool,
    transform: Transform | None = None,
) -> tuple[list[str], Iterator[tuple[int, dict, list[np.ndarray], list[tuple[slice, slice]]]]]:
    """The labels both model and data have, and the split's slices in batches: (index of the first, the batch's
    columns, each slice's probabilities, the region of each stored slice they cover: all of it without a
    transform). ``transform(image, index in the split, spacing, columns of the slice)`` gives the ``View`` the
    model is shown instead of the stored slice (the batch's columns keep the stored one)."""
    dataset = select_split(dataset, split)
    labels = [label for label in segmenter.labels if label in label_names(dataset)]
    if not labels:
        raise ValueError(f"the model predicts {segmenter.labels}; the data set has masks for {label_names(dataset)}")
    rows = dataset.with_format("numpy")

    def batches() -> Iterator[tuple[int, dict, list[np.ndarray], list[tuple[slice, slice]]]]:
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, disable=not progress):
            batch = rows[start : start + batch_size]
            spacings = [tuple(float(v) for v in spacing) for spacing in batch["spacing"]]
            views = [View(image, spacing) for image, spacing in zip(batch["image"], spacings, strict=True)]
            if transform is not None:
                columns = [{key: batch[key][i] for key in batch} for i in range(len(views))]
                views = [transform(v.image, start + i, v.spacing, columns[i]) for i, v in enumerate(views)]
            probs = segmenter.probabilities([v.image for v in views], [v.spacing for v in views], batch_size=batch_size)
            shapes = [batch["image"][i][view.region].shape for i, view in enumerate(views)]
            probs = [onto(p, shape) for p, shape in zip(probs, shapes, strict=True)]
            yield start, batch, probs, [view.region for view in views]

    return labels, batches()


def evaluate_dataset(
    segmenter: Segmenter,
    dataset: datasets.Dataset,
    split: str | None = "test",
    batch_size: int = 16,
    progress: bool = True,
) -> list[dict]:
    """One ``slice_metrics`` record per slice and label (the labels both model and data have).

    Vertebral bodies are scored within the rows where they are labelled (``labelled_rows``): beyond them a body in
    the image has no mask, and a model that finds it is right.
    """
    plane_names = dataset.features["plane"].names
    labels, batches = predicted_batches(segmenter, dataset, split, batch_size, "evaluating", progress)
    records = []
    for start, batch, probs, _ in batches:
        for i, p in enumerate(probs):
            spacing = tuple(float(s) for s in batch["spacing"][i])
            for label in labels:
                rows = labelled_rows(batch, i) if label in EXTENT_LABELS else slice(None)
                pred, truth = segmenter.mask(p, label)[rows], batch[label][i][rows] > 0
                record = slice_metrics(pred, truth, spacing)
                record.update(
                    contrast=contrast_to_noise(batch["image"][i][rows], truth),
                    label=label,
                    plane=plane_names[batch["plane"][i]],
                    case=str(batch["case"][i]),
                    source=source_of(str(batch["case"][i])),
                    file=str(batch["file"][i]),
                    index=i + start,
                )
                records.append(record)
    return records


def onto(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(labels, h, w) probabilities resized (bilinear) onto ``shape``; unchanged when they have it already."""
    if probabilities.shape[1:] == tuple(shape):
        return probabilities
    resized = F.interpolate(torch.from_numpy(probabilities)[None], size=tuple(shape), mode="bilinear")
    return resized[0].numpy()


# Contrast-to-noise of the truth against the pixels around it (``metrics.contrast_to_noise``): negative is darker.
CONTRAST_BINS = (-math.inf, -2, -1, 0, 1, 2, 4, math.inf)


def contrast_table(records: list[dict], label: str) -> str:
    """Dice and recall of ``label`` by how much its truth stands out from its surroundings, as a markdown table:
    a model can only find what the image shows, so this separates subtle structures from conspicuous ones."""
    with_truth = [r for r in records if r["label"] == label and r["tp"] + r["fn"] > 0]
    lines = [
        "| Contrast-to-noise of the truth | Slices | Dice (mean) | Recall (pooled) | Precision (pooled) "
        "| Lesion recall |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for low, high in itertools.pairwise(CONTRAST_BINS):
        group = [r for r in with_truth if low <= r["contrast"] < high]
        if group:
            s = summarize(group, by=None)["overall"]
            name = f"< {high}" if low == -math.inf else f">= {low}" if high == math.inf else f"{low} to {high}"
            values = (s["dice_fg"], s["pooled_recall"], s["pooled_precision"], s["lesion_recall"])
            lines.append(f"| {name} | {len(group)} | " + " | ".join(format_value(v) for v in values) + " |")
    return "\n".join(lines)


SOURCE_COLUMNS = (
    ("dice_fg", "Dice (mean, slices with label)"),
    ("pooled_dice", "Dice (pooled)"),
    ("slice_false_alarm_rate", "False-alarm rate"),
    ("lesion_f1", "Lesion F1"),
)


def source_table(records: list[dict], label: str) -> str:
    """Scores of ``label`` per source (``hemseg.data.volumes.source_of``: collection, and in the shared spine set also
    sequence) as a markdown table: a gap between sources is what to expect on a scanner or sequence not seen."""
    mine = [r for r in records if r["label"] == label]
    lines = [
        "| Source | Cases | Slices | With label | " + " | ".join(title for _, title in SOURCE_COLUMNS) + " |",
        "| --- " * (len(SOURCE_COLUMNS) + 4) + "|",
    ]
    for source, s in summarize(mine, by="source").items():
        if source != "overall":
            cases = len({r["case"] for r in mine if r["source"] == source})
            values = " | ".join(format_value(s[key]) for key, _ in SOURCE_COLUMNS)
            lines.append(f"| {source} | {cases} | {s['n']} | {s['n_fg']} | {values} |")
    return "\n".join(lines)


def summarize_by_label(records: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """{label: {plane or "overall": summary}} from evaluation records."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    return {label: summarize([r for r in records if r["label"] == label], by="plane") for label in labels}


def format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def markdown_table(summary: dict[str, dict[str, float]], mark: str | None = None) -> str:
    """A label's summary as a markdown table in the layout of the paper's Table 4 (rows: planes, overall)."""
    lines = ["| Plane | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"]
    lines.append("| --- " * (len(TABLE_COLUMNS) + 1) + "|")
    for plane in [p for p in PLANES if p in summary] + ["overall"]:
        name = f"**{plane}**" if plane == mark else plane
        lines.append(f"| {name} | " + " | ".join(format_value(summary[plane][key]) for key, _ in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def write_report(records: list[dict], out: Path, title: str, note: str, dataset=None, segmenter=None) -> dict:
    """report.md, metrics.csv, metrics.json, per_slice.csv and figures in ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize_by_label(records)
    parts = [f"# {title}", "", note, ""]
    # Only where every case id reads <source>_<id>: otherwise each case would be a source of its own.
    several_sources = all("_" in r["case"] for r in records) and len({r["source"] for r in records}) > 1
    for label, by_plane in summary.items():
        parts += [f"## {label}", "", markdown_table(by_plane), "", contrast_table(records, label), ""]
        if several_sources:
            parts += [source_table(records, label), ""]
    parts.append(
        "Dice (mean) averages the slices whose truth is not empty. Pooled scores come from the pixel counts summed "
        "over slices. SSIM, accuracy and HD95 (mm) are means over the slices where they are defined; HD95 is the "
        "image diagonal when exactly one mask is empty. Accuracy is dominated by background and never used to "
        "choose a model. Contrast-to-noise: (mean inside the truth - mean of the pixels within 3 px around it) / "
        "standard deviation of those pixels, on the image as read; negative means darker than its surroundings. "
        "Slices whose truth has no such surroundings (flat or absent) are left out of that table."
        + (
            " Source: the case id up to its first underscore (in the shared spine set also the MRI sequence)."
            if several_sources
            else ""
        )
    )
    (out / "report.md").write_text("\n".join(parts) + "\n")
    (out / "metrics.json").write_text(json.dumps(json_ready(summary), indent=1))
    rows = [
        {"label": label, "plane": plane, **values}
        for label, by_plane in summary.items()
        for plane, values in by_plane.items()
    ]
    write_csv(out / "metrics.csv", rows)
    write_csv(out / "per_slice.csv", records)
    from hemseg.evaluation.figures import best_worst_grid, plane_bars

    plane_bars(summary, out / "per_plane.png")
    if dataset is not None and segmenter is not None:
        for label in summary:
            best_worst_grid(records, dataset, segmenter, out / f"best_worst_{label}.png", label)
    return summary


def add_evaluate_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("evaluate", help="metrics of a model on a data set, per label and plane")
    add_data_options(parser, split="test")
    parser.add_argument("--out", required=True, help="folder for report.md, metrics.csv/json and figures")
    add_model_options(parser)
    parser.set_defaults(command=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    segmenter = Segmenter.load(args.model, precision=args.precision, tta=args.tta)
    dataset = load(args.data)
    records = evaluate_dataset(segmenter, dataset, args.split)
    note = (
        f"Model: {segmenter.source}. Data: {args.data}, split {args.split}, {len({r['file'] for r in records})} "
        "slices. Vertebral-body masks are real; hemangioma lesions are simulated (hemseg.data.simulate), so "
        "hemangioma scores are not clinical results."
    )
    write_report(records, Path(args.out), "hemseg evaluation", note, dataset, segmenter)
    print((Path(args.out) / "report.md").read_text())
    return 0
