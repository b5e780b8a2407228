"""What the app shows and offers for download from one segmentation: the overlay, the lesion table, scores
against a ground truth or from the model's own evaluation, and the files."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from huggingface_hub import hf_hub_download
from PIL import Image
from scipy import ndimage
from skimage.measure import regionprops

from hemseg.app.uploads import read_truth
from hemseg.evaluation.figures import error_map
from hemseg.files import replace_file, write_csv
from hemseg.inference.overlay import gray_rgb, label_colour, paint
from hemseg.inference.segmenter import BUNDLED_MODEL, LOAD_ERRORS, Prediction, Segmenter, parse_model_spec
from hemseg.metrics import EIGHT, slice_metrics

LESION = "hemangioma"
BODY = "vertebral_body"
LESION_COLUMNS = ["lesion", "area", "largest diameter", "share of its vertebral body", "warning"]
METRIC_KEYS = ("dice", "iou", "precision", "recall", "accuracy", "ssim", "hd95")


@dataclass
class Result:
    """What one segmentation produced: enough for the sliders to redraw without running the model."""

    pixels: np.ndarray
    prediction: Prediction
    plane: str | None
    name: str
    window: tuple[float, float] | None = None

    def store(self, folder: Path) -> StoredResult:
        """Save the arrays to ``folder`` (the session's), replacing the session's earlier result."""
        for old in folder.glob("*.npz"):
            old.unlink(missing_ok=True)
        path = folder / f"{uuid.uuid4().hex}.npz"
        probabilities = self.prediction.probabilities
        with replace_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, pixels=self.pixels, **{f"p_{label}": p for label, p in probabilities.items()})
        p = self.prediction
        return StoredResult(
            path,
            list(probabilities),
            self.plane,
            self.name,
            self.window,
            p.threshold,
            p.spacing,
            p.seeds,
            p.spacing_source,
        )


@dataclass
class StoredResult:
    """A Result whose arrays wait on disk: what ``gr.State`` keeps per session, a few hundred bytes, where the
    arrays of a 2048 x 2048 slice would hold 50 MB of memory per session until it expires."""

    path: Path
    labels: list[str]
    plane: str | None
    name: str
    window: tuple[float, float] | None
    threshold: float
    spacing: tuple[float, float] | None
    seeds: dict[str, float]
    spacing_source: str | None

    def load(self) -> Result:
        with np.load(self.path) as arrays:
            probabilities = {label: arrays[f"p_{label}"] for label in self.labels}
            pixels = arrays["pixels"]
        prediction = Prediction(probabilities, self.threshold, self.spacing, self.seeds, self.spacing_source)
        return Result(pixels, prediction, self.plane, self.name, self.window)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def lesion_rows(prediction: Prediction) -> list[list[object]]:
    """One row per predicted lesion (8-connected component): area, largest diameter, share of its body."""
    masks = prediction.masks
    if LESION not in masks:
        return []
    spacing = prediction.spacing or (1.0, 1.0)
    unit = "mm" if prediction.spacing else "px"
    lesions, _ = ndimage.label(masks[LESION], structure=EIGHT)
    bodies, _ = ndimage.label(masks[BODY], structure=EIGHT) if BODY in masks else (None, 0)
    rows = []
    for region in regionprops(lesions, spacing=spacing):
        lesion = lesions == region.label
        share = "n/a"
        if bodies is not None:
            ids = np.unique(bodies[lesion])
            body = np.isin(bodies, ids[ids > 0])
            if body.any():
                share = f"{100 * (lesion & body).sum() / body.sum():.0f} %"
        top, left, bottom, right = region.bbox
        touches = top == 0 or left == 0 or bottom == lesions.shape[0] or right == lesions.shape[1]
        rows.append(
            [
                region.label,
                f"{region.area:.1f} {unit}²",
                f"{region.feret_diameter_max:.1f} {unit}",
                share,
                "touches the image border: may be cut off" if touches else "",
            ]
        )
    return rows


def draw(result: Result, threshold: float, opacity: float, outline: bool):
    prediction = result.prediction.with_threshold(threshold)
    before = gray_rgb(result.pixels, result.window)
    picture = paint(before, prediction.masks, opacity=opacity, outline=outline)
    return prediction, picture, (before, picture)


def model_metrics(segmenter: Segmenter) -> tuple[str, dict] | None:
    """(split, summary) from the model's metrics.json: the bundled folder, a local folder or the Hub."""
    source = BUNDLED_MODEL if segmenter.source == "bundled" else Path(segmenter.source)
    try:
        if source.is_dir():
            path = source / "metrics.json"
        else:
            repo, revision = parse_model_spec(segmenter.source)
            path = Path(hf_hub_download(repo, "metrics.json", revision=revision))
        metrics = json.loads(path.read_text())
    except (*LOAD_ERRORS, FileNotFoundError, json.JSONDecodeError):
        return None
    split = "test" if "test" in metrics else "val"
    if split not in metrics:
        return None
    return split, metrics[split]  # JSON null (NaN when written) reads as n/a in markdown_table


def truth_metrics(truth: str | None, prediction: Prediction, pixels: np.ndarray):
    """This image's metrics against an uploaded ground-truth mask of the hemangioma, an error map, and a note (empty,
    or why the mask was not used: the segmentation is shown all the same)."""
    if not truth:
        return [], None, ""
    if LESION not in prediction.masks:
        return [], None, f"The ground-truth mask was not used: this model predicts no {LESION}."
    try:
        mask = read_truth(truth, pixels.shape)
    except ValueError as err:
        note = f"The ground-truth mask was not used: {err}."
        gr.Warning(note)
        return [], None, note
    pred = prediction.masks[LESION]
    scores = slice_metrics(pred, mask, prediction.spacing or (1.0, 1.0))
    rows = [[key, None if np.isnan(scores[key]) else round(float(scores[key]), 4)] for key in METRIC_KEYS]
    background = gray_rgb(pixels).astype(np.float32)
    colours = error_map(pred, mask).astype(np.float32)
    marked = (pred | mask)[..., None]
    return rows, np.where(marked, 0.35 * background + 0.65 * colours, background).astype(np.uint8), ""


def write_downloads(result: Result, prediction: Prediction, rows: list[list[object]], folder: Path) -> list[str]:
    """The masks as PNG and the lesion table as CSV, in a new folder under ``folder`` (the session's), each file
    written whole or not at all."""
    out = folder / uuid.uuid4().hex[:12]
    out.mkdir()
    files = []
    for label, mask in prediction.masks.items():
        path = out / f"{result.name}_{label}.png"
        with replace_file(path) as tmp:
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
        files.append(str(path))
    table = [dict(zip(LESION_COLUMNS, row, strict=True)) for row in rows]
    files.append(str(write_csv(out / f"{result.name}_lesions.csv", table, LESION_COLUMNS)))
    return files


def legend_markdown(labels: list[str]) -> str:
    swatches = [
        f'<span style="color: rgb{label_colour(label, i)}">■</span> {label.replace("_", " ")}'
        for i, label in enumerate(labels)
    ]
    return "Legend: " + " &nbsp; ".join(swatches)
