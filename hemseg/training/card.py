"""The model card (README.md of a model folder), written from what the run recorded in its metrics.json, with
`model-index` metadata from huggingface_hub."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hemseg.data.volumes import PLANES
from hemseg.evaluation.evaluate import markdown_table
from hemseg.training.recipe import Recipe

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


def data_description(data: str) -> dict[str, Any] | None:
    """What a run records of its data: from the slice folder's dataset.json (written by `hemseg prepare`) its
    name, seed, simulator version, sources and labels; None for other data (a Hub data set, say)."""
    description = Path(str(data)) / "dataset.json"
    if not description.exists():
        return None
    info = json.loads(description.read_text())
    return {
        "name": Path(str(data)).name,
        "seed": info.get("seed"),
        "simulator_version": info.get("simulator", {}).get("version"),
        "sources": info.get("sources", []),
        "labels": info.get("labels", {}),
    }


def data_limits(info: dict[str, Any] | None) -> str:
    """The card's limits of the training data: the project's own sources are described; other data are not."""
    sources = (info or {}).get("sources", [])
    if sources and all(Path(source).name == "spine-mri" for source in sources):
        return SPINE_MRI_LIMITS
    return OTHER_DATA_LIMITS


def data_note(data: str, info: dict[str, Any] | None) -> str:
    """What the training data were."""
    if info is None:
        return f"Data set `{data}`. Hemangioma masks, if any, come from hemseg's simulator: the lesions are simulated."
    labels = "; ".join(f"{k}: {v}" for k, v in info["labels"].items())
    return (
        f"Slice folder `{info['name']}` made by `python -m hemseg prepare` (seed {info['seed']}, simulator version "
        f"{info['simulator_version']}) from {', '.join(info['sources'])}. Labels: {labels}. Split by case into "
        "train/val/test."
    )


def augmentation_note(recipe: Recipe) -> str:
    aug = recipe.augmentation
    if not aug.enabled:
        return "augmentation off"
    parts = [f"noise sd up to {aug.noise_std[1]:g}"]
    parts += [f"random intensity curves on {aug.curve_p:g} of the samples"] * bool(aug.curve_p)
    parts += [f"random tissue intensities on {aug.tissue_p:g}"] * bool(aug.tissue_p)
    parts += [f"Gaussian blur of sd up to {aug.blur_max_sigma:g} grid pixels on {aug.blur_p:g} of the samples"] * bool(
        aug.blur_p
    )
    parts += [f"fields of view cut down to {aug.fov_min} pixels on {aug.fov_p:g}"] * bool(aug.fov_p)
    return f"augmentation on ({', '.join(parts)})"


def training_note(run: dict[str, Any], recipe: Recipe) -> str:
    """One paragraph: the network, optimiser, loss, batch, augmentation, seed and the best epoch."""
    model, training, validation = recipe.model, recipe.training, recipe.validation
    first, last = run["lr"]
    lr = f"{first:g}" + (f" (epoch 1) to {last:g} (halved when validation stalled)" if last != first else "")
    crop = f" of {training.crop_size}x{training.crop_size} windows" if training.crop_size else ""
    noisy = f", validated also with noise sd {validation.noise:g}" if validation.noise else ""
    seeds = run["seed_thresholds"]
    seed_note = (
        f" Seed thresholds ({', '.join(f'{k} {v:g}' for k, v in seeds.items())}): a predicted component of these "
        "labels is kept only where its probability reaches the seed somewhere, chosen for the highest validation "
        "pooled Dice (table: `seed_threshold_table` in metrics.json); the scores above include them."
        if seeds
        else ""
    )
    return (
        f"UNet(base_channels={model.base_channels}, depth={model.depth}), Adam lr {lr}, loss {training.loss}, batch "
        f"{training.batch_size} per process{crop}, {augmentation_note(recipe)}{noisy}, seed {training.seed}; best "
        f"validation {run['selected_by']} (mean over labels) {run['best_val_score']:.4f} at epoch {run['best_epoch']} "
        f"of {run['epochs_run']}"
        + (f", stopped by {run['stopped_by']}" if "stopped_by" in run else "")
        + f". Per-epoch log: training_log.csv; curves: training_curves.png.{seed_note}"
    )


def write_model_card(folder: Path, run: dict[str, Any], model_name: str) -> Path:
    """Write ``folder/README.md`` from ``run`` (what the run records in metrics.json): metadata, the data, its
    scores, how it was trained (the whole recipe and every command), use and limits, how to load.

    Every evaluated split ("val", "test") gets its tables, and the last one (the held-out test cases) the
    ``model-index`` metadata.
    """
    summaries = {split: run[split] for split in ("val", "test") if split in run}
    split = list(summaries)[-1]
    info = run.get("data_info")
    dataset_name = info["name"] if info else Path(str(run["data"])).name
    recipe = Recipe.from_dict(run["recipe"])
    if recipe.model.spacing_mm is None:
        size = recipe.model.image_size
        fit = (
            f"padded to a square\n  and resized to {size}x{size}; the network runs on the part of that grid which "
            "holds the image"
        )
    else:
        fit = (
            f"resampled to\n  {recipe.model.spacing_mm:g} mm pixels (the pixel size from the file, or given, or "
            "estimated by the model), padded to a\n  multiple of "
            f"{2**recipe.model.depth}; the network runs over the whole slice"
        )
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
    commands = "\n".join(run["commands"])
    # Notes added to metrics.json after the run (how a model was made over several runs, say) close the section.
    notes = "".join(f"{note}\n\n" for note in run.get("notes", []))
    body = f"""
# {model_name}

U-Net (hemseg, after the paper's architecture) that segments {", ".join(run["labels"])} in 2D spine MRI slices.

**Research use only. Not a medical device. The hemangiomas it was trained and scored on are simulated.**

## Training data

{data_note(run["data"], info)}

## Scores

Per label and plane, on cases held out from training (split by patient), at each slice's own resolution. Dice (mean)
averages the slices whose truth is not empty; pooled scores sum the pixel counts of all slices; HD95 in mm.
Vertebral-body scores are against **real** masks; hemangioma scores are against **simulated** lesions and are
**not** comparable with the paper's Dice of 0.634 on real hemangiomas.

{tables}

## Training

{training_note(run, recipe)}

Made with (each command that trained it, in order; later ones resumed the run):

```bash
{commands}
```

The whole recipe (`--recipe` takes this file):

```yaml
{recipe.to_yaml().rstrip()}
```

{notes}## Intended use and limits

- For research on spine hemangioma segmentation and for trying hemseg; not for diagnosis or treatment.
- {data_limits(info)}
- Input: one grayscale slice of any size; intensities are scaled by their own percentiles, {fit}.
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
