"""The Gradio app: upload a spine MRI slice or volume, see the segmentation, and the numbers behind it.

Everything a request needs travels in its own inputs and ``gr.State``; nothing is shared between users but the
loaded model, which is read-only.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import nibabel as nib
import numpy as np

from hemseg.app.results import (
    LESION,
    LESION_COLUMNS,
    Result,
    draw,
    legend_markdown,
    lesion_rows,
    model_metrics,
    scratch_dir,
    truth_metrics,
    write_downloads,
)
from hemseg.app.uploads import choose_slice, open_upload
from hemseg.data.volumes import NIFTI_SUFFIXES, PLANE_AXIS, PLANES, Volume, cut, file_stem, plane_spacing, uncut
from hemseg.evaluation.evaluate import markdown_table
from hemseg.inference.segmenter import Segmenter
from hemseg.preprocessing import finite_or_background

EXAMPLES = Path(__file__).parents[2] / "examples"  # in a clone and in the Space; an installed package has none
EXAMPLE_PIXEL_MM = 1.0  # examples/manifest.csv: the PNGs keep no pixel size of their own
SOURCES = {"file": "from the file", "given": "as given", "estimated": "estimated by the model"}
NOTICE = (
    "**Research use only. Not a medical device; not for diagnosis.** The models were trained and scored on real "
    "lumbar spine MRI with **simulated** hemangiomas. Uploads and results are deleted from the server after an hour."
)


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
        pixel_size: float | None = None,
    ):
        """Segment the upload; return overlay, before/after pair, lesion table, model table, truth metrics,
        error map, downloads, a summary and the state for redrawing. ``pixel_size`` (mm; None or 0: the file's, or
        the model's estimate) overrides what the file says."""
        upload = open_upload(file)
        if isinstance(upload, Volume):
            upload = choose_slice(upload, "sagittal" if plane == "auto" else plane, int(slice_index))
        plane_used = upload.plane or (None if plane == "auto" else plane)
        given = (float(pixel_size),) * 2 if pixel_size else None
        try:
            prediction = self.segmenter.predict(upload, given)
        except ValueError as err:
            raise gr.Error(str(err)) from err
        result = Result(np.asarray(upload.pixels), prediction, plane_used, upload.name, upload.window)
        return self.render(result, threshold, opacity, outline, truth)

    def segment_example(self, file: str):
        """An example slice at its own pixel size (the PNGs keep none; examples/manifest.csv gives 1 mm), without
        setting the page's pixel-size field, which would then override the next upload's."""
        return self.segment(file, pixel_size=EXAMPLE_PIXEL_MM)

    def render(self, result: Result, threshold, opacity, outline, truth):
        threshold = self.segmenter.model.threshold if threshold is None else float(threshold)
        prediction, picture, pair = draw(result, threshold, opacity, outline)
        rows = lesion_rows(prediction)
        truth_rows, errors, truth_note = truth_metrics(truth, prediction, result.pixels)
        downloads = write_downloads(result, prediction, rows)
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
        summary = (
            f"**{result.name}**: plane {plane}; {len(rows)} lesion(s); hemangioma area "
            f"{prediction.area(LESION):.1f} {area_unit}{size}; threshold {threshold:.2f}{kept}; "
            f"model {self.segmenter.source}."
            if LESION in prediction.masks
            else f"**{result.name}**: plane {plane}{size}; model {self.segmenter.source}."
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
            spacing = plane_spacing(upload.spacing, plane)  # the file's: every slice is at the model's pixel size
            slices = [cut(image, plane, i) for i in range(image.shape[axis])]
            probs = self.segmenter.probabilities(slices, [spacing] * len(slices))
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


def build_app(segmenter: Segmenter | None = None) -> gr.Blocks:
    # bf16 where the CPU does it natively (AMX): faster than fp32, overall validation Dice within 0.004
    # (docs/benchmarks.md); elsewhere Segmenter falls back to fp32.
    app = App(segmenter or Segmenter.load(precision="bf16"))
    examples = sorted(str(p) for p in EXAMPLES.glob("*.png") if p.stem.count("_") == 3)
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
                pixel_size = gr.Number(
                    value=None,
                    minimum=0,
                    label="Pixel size in mm (empty: from the DICOM or NIfTI file, else estimated by the model)",
                )
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
        inputs = [file, plane, slice_index, threshold, opacity, outline, truth, pixel_size]
        run.click(app.segment, inputs, outputs, api_name="segment")
        file.change(app.volume_slider, [file, plane], slice_index, api_visibility="private")
        plane.change(app.volume_slider, [file, plane], slice_index, api_visibility="private")
        slice_index.release(app.segment, inputs, outputs, api_visibility="private")  # slide through a volume
        redraw_inputs = [state, threshold, opacity, outline, truth]
        threshold.release(app.redraw, redraw_inputs, outputs, api_visibility="private")
        # Opacity and outlines change the picture only: no masks, metrics or downloads to redo.
        restyle_inputs = [state, threshold, opacity, outline]
        opacity.release(app.restyle, restyle_inputs, [picture, pair], api_visibility="private")
        outline.change(app.restyle, restyle_inputs, [picture, pair], api_visibility="private")
        volume_button.click(
            app.segment_volume, [file, plane], [volume_summary, volume_files], api_name="segment_volume"
        )
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
