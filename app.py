"""hemseg web app (Gradio).

Until a trained model ships (issue 4), the app offers the part of the product that is already real: compare a
predicted mask with a ground-truth mask using hemseg.metrics, the same numbers training and evaluation report.
"""

from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from hemseg.metrics import slice_metrics

NOTICE = (
    "**Research use only.** Not a medical device. Automatic segmentation arrives with the trained model; "
    "this page compares two masks with hemseg's metrics."
)
SHOWN = ("dice", "iou", "precision", "recall", "accuracy", "ssim", "hd95", "nsd", "tp", "fp", "fn", "tn")


def read_mask(path: str | None, name: str) -> np.ndarray:
    """A black-and-white PNG/TIFF/JPEG as a boolean mask (any non-zero pixel is foreground)."""
    if path is None:
        raise gr.Error(f"Please upload the {name}.")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 0
    except OSError as err:
        raise gr.Error(f"The {name} could not be read as an image: {err}") from err


def compare(pred_path: str | None, truth_path: str | None, spacing_mm: float) -> list[list[object]]:
    pred = read_mask(pred_path, "predicted mask")
    truth = read_mask(truth_path, "ground-truth mask")
    try:
        result = slice_metrics(pred, truth, spacing=(spacing_mm, spacing_mm))
    except ValueError as err:
        raise gr.Error(str(err)) from err
    return [[key, result[key]] for key in SHOWN]


def build_app() -> gr.Blocks:
    with gr.Blocks(title="hemseg") as demo:
        gr.Markdown("# hemseg: spine hemangioma segmentation in MRI")
        gr.Markdown(NOTICE)
        with gr.Row():
            pred = gr.Image(type="filepath", label="Predicted mask", image_mode=None)
            truth = gr.Image(type="filepath", label="Ground-truth mask", image_mode=None)
        spacing = gr.Number(value=1.0, label="Pixel spacing (mm)", minimum=0.01)
        table = gr.Dataframe(headers=["metric", "value"], label="Metrics")
        gr.Button("Compare").click(compare, [pred, truth, spacing], table, api_name="compare")
    return demo


if __name__ == "__main__":
    build_app().launch(max_file_size="50mb")
