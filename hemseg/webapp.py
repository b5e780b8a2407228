"""The Gradio app: upload a spine MRI slice or volume, see the segmentation, and the numbers behind it.

Everything a request needs travels in its own inputs and ``gr.State``; nothing is shared between users but the
loaded model, which is read-only.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import nibabel as nib
import numpy as np
from huggingface_hub import hf_hub_download
from PIL import Image
from scipy import ndimage
from skimage.measure import regionprops

from hemseg.evaluate import markdown_table
from hemseg.figures import error_map
from hemseg.files import write_csv
from hemseg.inference import BUNDLED_MODEL, LOAD_ERRORS, Prediction, Segmenter, parse_model_spec
from hemseg.io import MAX_PIXELS, Slice, read_slice
from hemseg.metrics import EIGHT, slice_metrics
from hemseg.overlay import gray_rgb, label_colour, paint
from hemseg.transforms import finite_or_background
from hemseg.volumes import (
    NIFTI_SUFFIXES,
    PLANE_AXIS,
    PLANES,
    READ_ERRORS,
    Volume,
    cut,
    file_stem,
    nifti_header,
    plane_spacing,
    read_volume,
    uncut,
)

NOTICE = (
    "**Research use only. Not a medical device; not for diagnosis.** The models were trained and scored on real "
    "lumbar spine MRI with **simulated** hemangiomas. Uploads and results are deleted from the server after an hour."
)
LESION = "hemangioma"
BODY = "vertebral_body"
SCRATCH = Path(tempfile.gettempdir()) / "hemseg-app"  # this app's own result files, before Gradio caches them
MAX_AGE_S = 3600
LESION_COLUMNS = ["lesion", "area", "largest diameter", "share of its vertebral body", "warning"]
METRIC_KEYS = ("dice", "iou", "precision", "recall", "accuracy", "ssim", "hd95")


@dataclass
class Result:
    """What one segmentation produced; kept in gr.State so sliders redraw without running the model."""

    pixels: np.ndarray
    prediction: Prediction
    plane: str | None
    name: str
    window: tuple[float, float] | None = None


MAX_VOXELS = 512 * 512 * 256  # a volume's probabilities for every slice are held at once: about 0.5 GB per label


def without_folder(err: Exception, path: str) -> str:
    """The message of ``err`` without the server's folder of the upload ``path``: the user knows the file by name."""
    return str(err).replace(str(Path(path).parent) + "/", "")


def open_upload(path: str | None) -> Slice | Volume:
    """A 2D slice, or a 3D volume for NIfTI (and DICOM series folders are out of reach of an upload)."""
    if not path:
        raise gr.Error("Please upload an image: PNG, JPEG, TIFF, DICOM or NIfTI.")
    try:
        is_nifti = path.lower().endswith(NIFTI_SUFFIXES)
        shape = nifti_header(path).shape if is_nifti else ()
        if len([n for n in shape if n > 1]) >= 3:
            if np.prod(shape) > MAX_VOXELS:  # from the header: a small .nii.gz of zeros can unpack to gigabytes
                raise gr.Error(
                    f"The volume is too large for this app ({' x '.join(map(str, shape))} voxels; at most "
                    f"{MAX_VOXELS:,}): crop it, or upload single slices."
                )
            return read_volume(path)
        image = read_slice(path)
    except READ_ERRORS as err:
        raise gr.Error(without_folder(err, path)) from err
    if image.pixels.size > MAX_PIXELS:
        raise gr.Error(f"The image is too large ({image.pixels.shape}); at most {MAX_PIXELS:,} pixels.")
    return image


def choose_slice(volume: Volume, plane: str, index: int) -> Slice:
    axis = PLANE_AXIS[plane]
    depth = volume.image.shape[axis]
    index = depth // 2 if index < 0 else min(index, depth - 1)
    name = file_stem(volume.path)
    return Slice(cut(volume.image, plane, index), plane_spacing(volume.spacing, plane), plane, name)


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


class App:
    """The app's behaviour, separate from its layout so that it can be called and tested directly."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self.model_metrics = model_metrics(segmenter)

    def segment(
        self,
        file: str | None,
        plane: str = "auto",
        slice_index: int = -1,
        threshold: float | None = None,
        opacity: float = 0.45,
        outline: bool = False,
        truth: str | None = None,
    ):
        """Segment the upload; return overlay, before/after pair, lesion table, model table, truth metrics,
        error map, downloads, a summary and the state for redrawing."""
        upload = open_upload(file)
        if isinstance(upload, Volume):
            upload = choose_slice(upload, "sagittal" if plane == "auto" else plane, int(slice_index))
        plane_used = upload.plane or (None if plane == "auto" else plane)
        try:
            prediction = self.segmenter.predict(upload)
        except ValueError as err:
            raise gr.Error(str(err)) from err
        result = Result(np.asarray(upload.pixels), prediction, plane_used, upload.name, upload.window)
        return self.render(result, threshold, opacity, outline, truth)

    def render(self, result: Result, threshold, opacity, outline, truth):
        threshold = self.segmenter.model.threshold if threshold is None else float(threshold)
        prediction, picture, pair = draw(result, threshold, opacity, outline)
        rows = lesion_rows(prediction)
        truth_rows, errors, truth_note = truth_metrics(truth, prediction, result.pixels)
        downloads = write_downloads(result, prediction, rows)
        plane = result.plane or "unknown (choose one for the metrics table)"
        area_unit = "mm²" if prediction.spacing else "px² (no pixel spacing in the file)"
        seed = prediction.seeds.get(LESION)
        kept = f" (a lesion is kept where some pixel reaches {seed:g})" if seed and seed > threshold else ""
        summary = (
            f"**{result.name}**: plane {plane}; {len(rows)} lesion(s); hemangioma area "
            f"{prediction.area(LESION):.1f} {area_unit}; threshold {threshold:.2f}{kept}; "
            f"model {self.segmenter.source}."
            if LESION in prediction.masks
            else f"**{result.name}**: plane {plane}; model {self.segmenter.source}."
        )
        if truth_note:
            summary += f"\n\n**{truth_note}**"
        table = self.metrics_markdown(result.plane)
        return picture, pair, rows, table, truth_rows, errors, downloads, summary, result

    def redraw(self, result: Result | None, threshold, opacity, outline, truth):
        """Everything again for another threshold, from the stored prediction (no model run)."""
        if result is None:
            raise gr.Error("Segment an image first.")
        return self.render(result, threshold, opacity, outline, truth)

    def restyle(self, result: Result | None, threshold, opacity, outline):
        """The overlay and the before/after pair for another opacity or outline setting."""
        if result is None:
            raise gr.Error("Segment an image first.")
        threshold = self.segmenter.model.threshold if threshold is None else float(threshold)
        return draw(result, threshold, opacity, outline)[1:]

    def metrics_markdown(self, plane: str | None) -> str:
        if not self.model_metrics:
            return "This model ships no metrics.json: no validated scores to show."
        split, summary = self.model_metrics
        parts = [
            f"Scores of the loaded model on its **{split}** cases (real vertebral bodies, **simulated** hemangiomas); "
            + (f"this image's plane, **{plane}**, in bold." if plane else "choose the plane to mark its row.")
        ]
        for label, by_plane in summary.items():
            parts += [f"**{label}**", markdown_table(by_plane, mark=plane)]
        return "\n\n".join(parts)

    def volume_slider(self, file: str | None, plane: str):
        """The slice slider fitted to an uploaded volume's depth along the chosen plane; hidden otherwise."""
        if not file or not file.lower().endswith(NIFTI_SUFFIXES):
            return gr.update(visible=False)
        try:
            upload = open_upload(file)
        except gr.Error:
            return gr.update(visible=False)  # segmenting will say what is wrong with the file
        if not isinstance(upload, Volume):
            return gr.update(visible=False)
        depth = upload.image.shape[PLANE_AXIS["sagittal" if plane == "auto" else plane]]
        return gr.update(visible=True, minimum=0, maximum=depth - 1, value=depth // 2, step=1)

    def segment_volume(self, file: str | None, plane: str = "axial"):
        """Every slice of a NIfTI volume along ``plane``: lesion volume in mL and the 3D masks as NIfTI."""
        upload = open_upload(file)
        if not isinstance(upload, Volume):
            raise gr.Error("Whole-volume segmentation needs a 3D NIfTI volume.")
        plane = "axial" if plane == "auto" else plane
        axis = PLANE_AXIS[plane]
        try:
            # A slab outside the field of view is background, as in one slice (else its all-NaN slices are refused).
            image = finite_or_background(upload.image)  # no copy when every voxel is finite
            probs = self.segmenter.probabilities([cut(image, plane, i) for i in range(image.shape[axis])])
        except ValueError as err:  # no finite voxel at all
            raise gr.Error(str(err)) from err
        out = scratch_dir()
        lines = []
        files = []
        voxel_ml = float(np.prod(upload.spacing)) / 1000
        for label in self.segmenter.labels:
            stack = np.stack([self.segmenter.mask(p, label) for p in probs])  # (n, rows, cols)
            volume = uncut(stack, plane).astype(np.uint8)
            path = out / f"{file_stem(upload.path)}_{label}.nii.gz"
            nib.save(nib.Nifti1Image(volume, upload.affine), path)
            files.append(str(path))
            lines.append(f"- {label}: {volume.sum() * voxel_ml:.2f} mL ({int(volume.sum())} voxels)")
        return "Whole volume, " + plane + " slices:\n" + "\n".join(lines), files


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


def read_truth(truth: str, shape: tuple[int, ...]) -> np.ndarray:
    """An uploaded ground-truth mask as booleans (its higher value is the lesion); ValueError, in words a user
    understands, when it cannot serve: unreadable, another size, or not binary (more than two values)."""
    try:
        values = np.asarray(read_slice(truth).pixels)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"it could not be read ({without_folder(err, truth)})") from err
    if values.shape != shape:
        raise ValueError(
            f"it is {values.shape[1]} x {values.shape[0]} pixels but the image is {shape[1]} x {shape[0]}: they "
            "must have the same size"
        )
    distinct = np.unique(values)
    if len(distinct) > 2:
        shown = ", ".join(f"{v:g}" for v in distinct[:4]) + (", ..." if len(distinct) > 4 else "")
        raise ValueError(
            f"it is not binary: it holds {len(distinct)} different values ({shown}), and a mask holds two, "
            "background and lesion. A label map, or a mask saved as JPEG (whose compression adds grey values), "
            "cannot be scored; save the lesion mask as PNG with 0 for background and 255 (or 1) for lesion"
        )
    return values == distinct[-1] if len(distinct) == 2 else values > 0


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


def scratch_dir() -> Path:
    """A new folder for one request's files; folders older than an hour are deleted on the way.

    Gradio deletes its own cached copies (``delete_cache``); these are the originals it copied from.
    """
    SCRATCH.mkdir(exist_ok=True)
    now = time.time()
    for old in SCRATCH.iterdir():
        if now - old.stat().st_mtime > MAX_AGE_S:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=SCRATCH))


def write_downloads(result: Result, prediction: Prediction, rows: list[list[object]]) -> list[str]:
    out = scratch_dir()
    files = []
    for label, mask in prediction.masks.items():
        path = out / f"{result.name}_{label}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
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


def build_app(segmenter: Segmenter | None = None) -> gr.Blocks:
    # bf16 where the CPU does it natively (AMX): faster than fp32, overall validation Dice within 0.004 (README,
    # Speed); elsewhere Segmenter falls back to fp32.
    app = App(segmenter or Segmenter.load(precision="bf16"))
    examples = sorted(str(p) for p in (Path(__file__).parents[1] / "examples").glob("*.png") if p.stem.count("_") == 3)
    source = app.segmenter.source
    with gr.Blocks(title="hemseg", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# hemseg: spine hemangioma segmentation in MRI")
        gr.Markdown(NOTICE)
        gr.Markdown(
            f"Model: **{source}**"
            + (" (shipped with hemseg)" if source == "bundled" else "")
            + ". Its scores below come from real vertebral-body masks and simulated hemangiomas."
        )
        state = gr.State()
        with gr.Row():
            with gr.Column(scale=1):
                file = gr.File(label="MRI slice or volume (PNG, JPEG, TIFF, DICOM, NIfTI)", type="filepath")
                plane = gr.Radio(["auto", *PLANES], value="auto", label="Plane (auto: from DICOM/NIfTI geometry)")
                slice_index = gr.Slider(-1, 512, value=-1, step=1, label="Volume slice (-1: middle)", visible=False)
                truth = gr.File(label="Optional ground-truth hemangioma mask (same size)", type="filepath")
                run = gr.Button("Segment", variant="primary")
                volume_button = gr.Button("Segment the whole volume (NIfTI)")
            with gr.Column(scale=2):
                summary = gr.Markdown()
                picture = gr.Image(label="Overlay", type="numpy", interactive=False)
                gr.Markdown(legend_markdown(app.segmenter.labels))
                with gr.Row():
                    threshold = gr.Slider(0.05, 0.95, value=app.segmenter.model.threshold, step=0.05, label="Threshold")
                    opacity = gr.Slider(0, 1, value=0.45, step=0.05, label="Opacity")
                    outline = gr.Checkbox(value=False, label="Outline only")
                pair = gr.ImageSlider(label="Before / after", type="numpy")
        lesions = gr.Dataframe(headers=LESION_COLUMNS, label="Lesions", interactive=False)
        with gr.Row():
            truth_table = gr.Dataframe(headers=["metric", "value"], label="This image vs. its ground truth")
            errors = gr.Image(label="Error map: true positive green, false positive red, missed blue", type="numpy")
        downloads = gr.File(label="Downloads: masks (PNG) and lesion table (CSV)", file_count="multiple")
        model_table = gr.Markdown(app.metrics_markdown(None))
        volume_summary = gr.Markdown()
        volume_files = gr.File(label="3D masks (NIfTI)", file_count="multiple")

        outputs = [picture, pair, lesions, model_table, truth_table, errors, downloads, summary, state]
        inputs = [file, plane, slice_index, threshold, opacity, outline, truth]
        run.click(app.segment, inputs, outputs, api_name="segment")
        file.change(app.volume_slider, [file, plane], slice_index, api_name=False)
        plane.change(app.volume_slider, [file, plane], slice_index, api_name=False)
        slice_index.release(app.segment, inputs, outputs, api_name=False)  # slide through a volume
        redraw_inputs = [state, threshold, opacity, outline, truth]
        threshold.release(app.redraw, redraw_inputs, outputs, api_name=False)
        # Opacity and outlines change the picture only: no masks, metrics or downloads to redo.
        restyle_inputs = [state, threshold, opacity, outline]
        opacity.release(app.restyle, restyle_inputs, [picture, pair], api_name=False)
        outline.change(app.restyle, restyle_inputs, [picture, pair], api_name=False)
        volume_button.click(
            app.segment_volume, [file, plane], [volume_summary, volume_files], api_name="segment_volume"
        )
        if examples:
            gr.Examples(
                examples=[[e] for e in examples],
                inputs=[file],
                outputs=outputs,
                fn=app.segment,
                run_on_click=True,
                cache_examples=False,
                label="Examples (simulated lesions)",
            )
    return demo
