"""The Gradio app: upload a spine MRI slice or volume, see the segmentation, and the numbers behind it.

Everything a request needs travels in its own inputs and ``gr.State``; nothing is shared between users but the
loaded model, which is read-only. The arrays behind a session's sliders wait on disk in its private folder
(``hemseg.app.storage``), not in memory.
"""

from __future__ import annotations

import gzip
import os
import re
import sys
import time
from pathlib import Path

import gradio as gr
import nibabel as nib
import numpy as np

from hemseg.app.results import (
    LESION,
    LESION_COLUMNS,
    Result,
    StoredResult,
    draw,
    legend_markdown,
    lesion_rows,
    model_metrics,
    truth_metrics,
    write_downloads,
)
from hemseg.app.storage import Storage
from hemseg.app.uploads import choose_frame, choose_slice, open_upload, user_error
from hemseg.data.images import frame_count
from hemseg.data.limits import MAX_PIXELS, MAX_SIDE, MAX_VOXELS
from hemseg.data.volumes import (
    NIFTI_SUFFIXES,
    PLANE_AXIS,
    PLANES,
    Volume,
    canonical_shape,
    cut,
    file_stem,
    nifti_header,
    plane_spacing,
    uncut,
)
from hemseg.evaluation.evaluate import markdown_table
from hemseg.files import replace_file, write_failure
from hemseg.inference.segmenter import Segmenter
from hemseg.preprocessing import finite_or_background

EXAMPLES = Path(__file__).parents[2] / "examples"  # in a clone and in the Space; an installed package has none
EXAMPLE_PIXEL_MM = 1.0  # examples/manifest.csv: the PNGs keep no pixel size of their own
SOURCES = {"file": "from the file", "given": "as given", "estimated": "estimated by the model"}
NOTICE = (
    "**Research use only. Not a medical device; not for diagnosis.** The models were trained and scored on real "
    "lumbar spine MRI with **simulated** hemangiomas."
)
VOLUME_BUDGET_S = 120.0  # one whole volume's share of the server; 512 x 512 x 200 takes about 10 s (docs/app.md)
VOLUME_CHUNK = 8  # slices between looks at the clock and at whether the client is still there
# Whole volumes run one at a time, in a queue of their own: a heavy one holds one worker and its memory, and
# single slices keep the others (``build_app``'s ``workers``).
VOLUME_CONCURRENCY = 1


def markdown_text(text: str) -> str:
    """``text`` (a file name, a note about the uploader's file) shown as written in Markdown: the characters that
    open HTML, links, images, code and emphasis are escaped; the others (``_`` within a name) read as they are."""
    return re.sub(r"([\\`*\[\]<>&])", r"\\\1", text)


def privacy_note(retention_s: float) -> str:
    return (
        f"Uploads and results stay in a private folder on the server, deleted after {retention_s / 60:g} minutes, "
        "when you close the page, or when the server stops. Limits: an image of at most "
        f"{MAX_PIXELS:,} pixels ({MAX_SIDE} x {MAX_SIDE}), a volume of at most {MAX_VOXELS:,} voxels (512 x 512 x 256)."
    )


class App:
    """The app's behaviour, separate from its layout so that it can be called and tested directly."""

    def __init__(self, segmenter: Segmenter, storage: Storage | None = None) -> None:
        self.segmenter = segmenter
        self.storage = storage or Storage()
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
        pixel_size: float | None = None,
        request: gr.Request | None = None,
    ):
        """Segment the upload; return overlay, before/after pair, lesion table, model table, truth metrics,
        error map, downloads, a summary and the state for redrawing. ``pixel_size`` (mm; None or 0: the file's, or
        the model's estimate) overrides what the file says."""
        upload = open_upload(file)
        if isinstance(upload, Volume):
            upload = choose_slice(upload, "sagittal" if plane == "auto" else plane, int(slice_index))
        elif isinstance(upload, list):  # the frames of a multi-frame DICOM
            upload = choose_frame(upload, int(slice_index))
        plane_used = upload.plane or (None if plane == "auto" else plane)
        given = (float(pixel_size),) * 2 if pixel_size else None
        try:
            prediction = self.segmenter.predict(upload, given)
        except ValueError as err:
            raise user_error(str(err)) from err
        result = Result(np.asarray(upload.pixels), prediction, plane_used, upload.name, upload.window)
        return self.render(result, threshold, opacity, outline, truth, self._session(request))

    def segment_example(self, file: str, request: gr.Request | None = None):
        """An example slice at its own pixel size (the PNGs keep none; examples/manifest.csv gives 1 mm), without
        setting the page's pixel-size field, which would then override the next upload's."""
        return self.segment(file, pixel_size=EXAMPLE_PIXEL_MM, request=request)

    def _session(self, request: gr.Request | None) -> Path:
        return self.storage.session(request.session_hash if request is not None else "")

    def render(self, result: Result, threshold, opacity, outline, truth, folder: Path, stored=None):
        """Every output for ``result`` at ``threshold``; its arrays are stored in ``folder`` unless ``stored``
        already holds them (a redraw)."""
        threshold = self.segmenter.model.threshold if threshold is None else float(threshold)
        prediction, picture, pair = draw(result, threshold, opacity, outline)
        rows = lesion_rows(prediction)
        truth_rows, errors, truth_note = truth_metrics(truth, prediction, result.pixels)
        try:
            downloads = write_downloads(result, prediction, rows, folder)
            stored = stored or result.store(folder)
        except OSError as err:
            print(f"hemseg: {write_failure(err, folder)}", file=sys.stderr)  # the path is the server's, not the user's
            raise user_error("The server could not save the results (its disk may be full); try again later.") from err
        plane = result.plane or "unknown (choose one for the metrics table)"
        area_unit = "mm²" if prediction.spacing else "px² (no pixel spacing in the file)"
        size = (
            f"; pixel size {prediction.spacing[0]:.3g} x {prediction.spacing[1]:.3g} mm "
            f"({SOURCES[prediction.spacing_source]})"
            if prediction.spacing
            else ""
        )
        seed = prediction.seeds.get(LESION)
        kept = f" (a lesion is kept where some pixel reaches {seed:g})" if seed and seed > threshold else ""
        name = markdown_text(result.name)
        summary = (
            f"**{name}**: plane {plane}; {len(rows)} lesion(s); hemangioma area "
            f"{prediction.area(LESION):.1f} {area_unit}{size}; threshold {threshold:.2f}{kept}; "
            f"model {self.segmenter.source}."
            if LESION in prediction.masks
            else f"**{name}**: plane {plane}{size}; model {self.segmenter.source}."
        )
        if truth_note:
            summary += f"\n\n**{markdown_text(truth_note)}**"
        table = self.metrics_markdown(result.plane)
        return picture, pair, rows, table, truth_rows, errors, downloads, summary, stored

    def stored(self, stored: StoredResult | None) -> Result:
        if stored is None:
            raise user_error("Segment an image first.")
        try:
            return stored.load()
        except OSError as err:
            raise user_error("This result is no longer kept on the server: segment the image again.") from err

    def redraw(self, stored: StoredResult | None, threshold, opacity, outline, truth):
        """Everything again for another threshold, from the stored prediction (no model run)."""
        return self.render(self.stored(stored), threshold, opacity, outline, truth, stored.path.parent, stored)

    def restyle(self, stored: StoredResult | None, threshold, opacity, outline):
        """The overlay and the before/after pair for another opacity or outline setting."""
        threshold = self.segmenter.model.threshold if threshold is None else float(threshold)
        return draw(self.stored(stored), threshold, opacity, outline)[1:]

    def forget(self, request: gr.Request) -> None:
        """The page was closed: its session's results go now, not after the retention time."""
        self.storage.forget(request.session_hash)

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
        """The slice slider fitted to an uploaded volume's depth along the chosen plane, or to a multi-frame
        DICOM's frames (from the header); hidden otherwise."""
        if file and frame_count(file) > 1:
            frames = frame_count(file)
            return gr.update(visible=True, minimum=0, maximum=frames - 1, value=frames // 2, step=1)
        if not file or not file.lower().endswith(NIFTI_SUFFIXES):
            return gr.update(visible=False)
        try:
            shape = canonical_shape(nifti_header(file))
        except ValueError:
            return gr.update(visible=False)  # segmenting will say what is wrong with the file
        if len([n for n in shape if n > 1]) < 3:
            return gr.update(visible=False)
        depth = shape[PLANE_AXIS["sagittal" if plane == "auto" else plane]]
        return gr.update(visible=True, minimum=0, maximum=depth - 1, value=depth // 2, step=1)

    def segment_volume(self, file: str | None, plane: str = "axial", request: gr.Request | None = None):
        """Every slice of a NIfTI volume along ``plane``: lesion volume in mL and the 3D masks as NIfTI.

        Yields its progress every VOLUME_CHUNK slices, then the result. Between yields Gradio looks whether the
        client is still there and stops the work when it is not; the work stops itself after VOLUME_BUDGET_S."""
        upload = open_upload(file)
        if not isinstance(upload, Volume):
            raise user_error("Whole-volume segmentation needs a 3D NIfTI volume.")
        plane = "axial" if plane == "auto" else plane
        # A slab outside the field of view is background, as in one slice (else its all-NaN slices are refused).
        image = finite_or_background(upload.image)  # no copy when every voxel is finite
        spacing = plane_spacing(upload.spacing, plane)  # the file's: every slice is at the model's pixel size
        depth = image.shape[PLANE_AXIS[plane]]
        masks: dict[str, list[np.ndarray]] = {label: [] for label in self.segmenter.labels}
        started = time.monotonic()
        for start in range(0, depth, VOLUME_CHUNK):
            if start and time.monotonic() - started > VOLUME_BUDGET_S:
                raise user_error(
                    f"Stopped after {VOLUME_BUDGET_S:g} s at slice {start} of {depth}: the server's limit for one "
                    "volume. Crop the volume to the spine, or segment single slices."
                )
            slices = [cut(image, plane, i) for i in range(start, min(start + VOLUME_CHUNK, depth))]
            try:
                probs = self.segmenter.probabilities(slices, [spacing] * len(slices))
            except ValueError as err:  # no finite voxel at all
                raise user_error(str(err)) from err
            for label in masks:
                masks[label].extend(self.segmenter.mask(p, label) for p in probs)
            yield f"Segmenting the {plane} slices: {start + len(slices)} of {depth} done.", None
        folder = self._session(request) / f"volume-{os.urandom(6).hex()}"
        folder.mkdir()
        lines, files = [], []
        voxel_ml = float(np.prod(upload.spacing)) / 1000
        for label, stack in masks.items():
            volume = uncut(np.stack(stack), plane).astype(np.uint8)
            path = folder / f"{file_stem(upload.path)}_{label}.nii.gz"
            try:
                with replace_file(path) as tmp:
                    tmp.write_bytes(gzip.compress(nib.Nifti1Image(volume, upload.affine).to_bytes(), compresslevel=1))
            except OSError as err:
                print(f"hemseg: {write_failure(err, path)}", file=sys.stderr)
                message = "The server could not save the masks (its disk may be full); try again later."
                raise user_error(message) from err
            files.append(str(path))
            lines.append(f"- {label}: {volume.sum() * voxel_ml:.2f} mL ({int(volume.sum())} voxels)")
        yield "Whole volume, " + plane + " slices:\n" + "\n".join(lines), files


def forget_result(stored: StoredResult | None) -> None:
    if stored is not None:
        stored.delete()


def build_app(segmenter: Segmenter | None = None, storage: Storage | None = None, workers: int = 2) -> gr.Blocks:
    """The page; ``workers`` slice requests run at once (hemseg.app.serve gives one per core)."""
    # bf16 where the CPU does it natively (AMX): faster than fp32, overall validation Dice within 0.004
    # (docs/benchmarks.md); elsewhere Segmenter falls back to fp32.
    app = App(segmenter or Segmenter.load(precision="bf16"), storage)
    retention = app.storage.retention
    examples = sorted(str(p) for p in EXAMPLES.glob("*.png") if p.stem.count("_") == 3)
    source = app.segmenter.source
    # Gradio's own copies of uploads and results go after the retention time too (checked every minute).
    with gr.Blocks(title="hemseg", delete_cache=(60, int(retention))) as demo:
        gr.Markdown("# hemseg: spine hemangioma segmentation in MRI")
        gr.Markdown(NOTICE + " " + privacy_note(retention))
        gr.Markdown(
            f"Model: **{source}**"
            + (" (shipped with hemseg)" if source == "bundled" else "")
            + ". Its scores below come from real vertebral-body masks and simulated hemangiomas."
        )
        # A session's stored result: its file goes with the state (closed page, or the retention time).
        state = gr.State(time_to_live=retention, delete_callback=forget_result)
        with gr.Row():
            with gr.Column(scale=1):
                file = gr.File(label="MRI slice or volume (PNG, JPEG, TIFF, DICOM, NIfTI)", type="filepath")
                plane = gr.Radio(["auto", *PLANES], value="auto", label="Plane (auto: from DICOM/NIfTI geometry)")
                slice_index = gr.Slider(
                    -1, 512, value=-1, step=1, label="Volume slice or DICOM frame (-1: middle)", visible=False
                )
                truth = gr.File(label="Optional ground-truth hemangioma mask (same size)", type="filepath")
                pixel_size = gr.Number(
                    value=None,
                    minimum=0,
                    label="Pixel size in mm (empty: from the DICOM or NIfTI file, else estimated by the model)",
                )
                run = gr.Button("Segment", variant="primary")
                volume_button = gr.Button("Segment the whole volume (NIfTI)")
            with gr.Column(scale=2):
                summary = gr.Markdown()
                # PNG: lossless, as a medical image should be shown, and faster to write than Gradio's WebP.
                picture = gr.Image(label="Overlay", type="numpy", interactive=False, format="png")
                gr.Markdown(legend_markdown(app.segmenter.labels))
                with gr.Row():
                    threshold = gr.Slider(0.05, 0.95, value=app.segmenter.model.threshold, step=0.05, label="Threshold")
                    opacity = gr.Slider(0, 1, value=0.45, step=0.05, label="Opacity")
                    outline = gr.Checkbox(value=False, label="Outline only")
                pair = gr.ImageSlider(label="Before / after", type="numpy", format="png")
        lesions = gr.Dataframe(headers=LESION_COLUMNS, label="Lesions", interactive=False)
        with gr.Row():
            truth_table = gr.Dataframe(headers=["metric", "value"], label="This image vs. its ground truth")
            errors = gr.Image(
                label="Error map: true positive green, false positive red, missed blue", type="numpy", format="png"
            )
        downloads = gr.File(label="Downloads: masks (PNG) and lesion table (CSV)", file_count="multiple")
        model_table = gr.Markdown(app.metrics_markdown(None))
        volume_summary = gr.Markdown()
        volume_files = gr.File(label="3D masks (NIfTI)", file_count="multiple")

        outputs = [picture, pair, lesions, model_table, truth_table, errors, downloads, summary, state]
        inputs = [file, plane, slice_index, threshold, opacity, outline, truth, pixel_size]
        slices = {"concurrency_id": "slices", "concurrency_limit": workers}
        run.click(app.segment, inputs, outputs, api_name="segment", **slices)
        file.change(app.volume_slider, [file, plane], slice_index, api_visibility="private")
        plane.change(app.volume_slider, [file, plane], slice_index, api_visibility="private")
        slice_index.release(app.segment, inputs, outputs, api_visibility="private", **slices)  # slide through a volume
        redraw_inputs = [state, threshold, opacity, outline, truth]
        threshold.release(app.redraw, redraw_inputs, outputs, api_visibility="private", **slices)
        # Opacity and outlines change the picture only: no masks, metrics or downloads to redo.
        restyle_inputs = [state, threshold, opacity, outline]
        opacity.release(app.restyle, restyle_inputs, [picture, pair], api_visibility="private")
        outline.change(app.restyle, restyle_inputs, [picture, pair], api_visibility="private")
        volume_button.click(
            app.segment_volume,
            [file, plane],
            [volume_summary, volume_files],
            api_name="segment_volume",
            concurrency_limit=VOLUME_CONCURRENCY,
        )
        demo.unload(app.forget)
        if examples:
            gr.Examples(
                examples=[[e] for e in examples],
                inputs=[file],
                outputs=outputs,
                fn=app.segment_example,
                run_on_click=True,
                cache_examples=False,
                label="Examples (simulated lesions)",
            )
    return demo
