"""The model card (README.md of a model folder), with `model-index` metadata from huggingface_hub."""

from __future__ import annotations

import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hemseg.evaluate import markdown_table
from hemseg.volumes import PLANES

SPLIT_NAMES = {
    "val": "cases that chose the best epoch and any seed threshold",
    "test": "cases never used for any choice",
}
# (summary key, model-index type, name): the name says how each score averages, as the card's tables do.
CARD_METRICS = (
    ("dice_fg", "dice", "dice (mean over slices with the label)"),
    ("pooled_dice", "dice", "pooled dice"),
    ("pooled_iou", "iou", "pooled iou"),
    ("pooled_precision", "precision", "pooled precision"),
    ("pooled_recall", "recall", "pooled recall"),
)


# What a model trained on the project's data (../shared/data/spine-mri via `hemseg prepare`) has not seen.
SPINE_MRI_LIMITS = """Trained on lumbar spine MRI of healthy adults (two sources, T2-weighted TSE and water-fat
  gradient echo) with simulated lesions. Real hemangiomas, other sequences (e.g. STIR, contrast-enhanced T1), other
  scanners, the cervical and thoracic spine, children, fractures and metastases were not seen; expect lower
  accuracy there."""
OTHER_DATA_LIMITS = """Trained only on the data named under Training data: scanners, sequences, anatomy and lesions
  that those data do not show were not seen; expect lower accuracy there."""


def eval_results(summary: dict, split: str, dataset_name: str) -> list[EvalResult]:
    """One EvalResult per label, plane (and overall) and metric, for the card's model-index."""
    results = []
    for label, by_plane in summary.items():
        for plane in [*PLANES, "overall"]:
            for key, metric_type, name in CARD_METRICS:
                value = by_plane.get(plane, {}).get(key)
                if value is None or math.isnan(value):
                    continue
                results.append(
                    EvalResult(
                        task_type="image-segmentation",
                        dataset_type="spine-mri-slices",
                        dataset_name=dataset_name,
                        dataset_split=split,
                        metric_type=metric_type,
                        metric_name=f"{label} {plane} {name}",
                        metric_value=round(float(value), 4),
                    )
                )
    return results


def write_model_card(
    folder: Path,
    *,
    model_name: str,
    labels: list[str],
    summaries: dict[str, dict],
    dataset_name: str,
    data_note: str,
    command: str,
    training_note: str,
    data_limits: str = OTHER_DATA_LIMITS,
    input_size: tuple[int, int] = (128, 128),
) -> Path:
    """Write ``folder/README.md``: metadata, what trained the model, its scores, use and limits, how to load.

    ``summaries`` maps each evaluated split ("val", "test") to ``summarize_by_label`` output; every split gets its
    tables, and the last one (the held-out test cases) the ``model-index`` metadata.
    """
    split = list(summaries)[-1]
    data = ModelCardData(
        model_name=model_name,
        library_name="hemseg",
        license="mit",
        pipeline_tag="image-segmentation",
        tags=["medical-imaging", "mri", "spine", "hemangioma", "unet", "simulated-lesions"],
        eval_results=eval_results(summaries[split], split, dataset_name),
    )
    tables = "\n\n".join(
        f"### {label} ({name} split: {SPLIT_NAMES.get(name, name)})\n\n{markdown_table(summary[label])}"
        for name, summary in summaries.items()
        for label in summary
    )
    body = f"""
# {model_name}

U-Net (hemseg, after the paper's architecture) that segments {", ".join(labels)} in 2D spine MRI slices.

**Research use only. Not a medical device. The hemangiomas it was trained and scored on are simulated.**

## Training data

{data_note}

## Scores

Per label and plane, on cases held out from training (split by patient), at each slice's own resolution. Dice (mean)
averages the slices whose truth is not empty; pooled scores sum the pixel counts of all slices; HD95 in mm.
Vertebral-body scores are against **real** masks; hemangioma scores are against **simulated** lesions and are
**not** comparable with the paper's Dice of 0.634 on real hemangiomas.

{tables}

## Training

{training_note}

Made with (each command that trained it, in order; later ones resumed the run):

```bash
{command}
```

## Intended use and limits

- For research on spine hemangioma segmentation and for trying hemseg; not for diagnosis or treatment.
- {data_limits}
- Input: one grayscale slice of any size; intensities are scaled by their own percentiles, padded to a square
  and resized to {input_size[0]}x{input_size[1]}; the network runs on the part of that grid which holds the image.
  Output: one probability map per label, resized back to the input.

## How to load

```python
from hemseg import Segmenter

segmenter = Segmenter.load("path/or/hub-id")  # a folder like this one, or its Hub id[@revision]
prediction = segmenter.predict("slice.png")
prediction.masks["hemangioma"], prediction.area("hemangioma"), prediction.area_unit
```
"""
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
    path = folder / "README.md"
    card.save(path)
    return path
