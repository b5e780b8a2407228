"""Figures for reports and model cards (matplotlib, no screen needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from hemseg.data.dataset import EXTENT_LABELS, labelled_rows
from hemseg.data.volumes import PLANES

BAR_METRICS = ("dice_fg", "pooled_dice", "pooled_iou", "pooled_precision", "pooled_recall")  # as in the tables
ERROR_COLOURS = np.array([[0, 0, 0], [46, 204, 113], [231, 76, 60], [52, 152, 219]], dtype=np.uint8)  # TN TP FP FN


def plane_bars(summary: dict[str, dict[str, dict[str, float]]], out: Path) -> Path:
    """Grouped bars: one panel per label, metrics per plane."""
    fig, axes = plt.subplots(1, len(summary), figsize=(5.5 * len(summary), 3.6), squeeze=False)
    groups = [*PLANES, "overall"]
    for ax, (label, by_plane) in zip(axes[0], summary.items(), strict=True):
        width = 0.8 / len(BAR_METRICS)
        for k, metric in enumerate(BAR_METRICS):
            values = [by_plane.get(g, {}).get(metric, math.nan) for g in groups]
            ax.bar(np.arange(len(groups)) + k * width, np.nan_to_num(values), width, label=metric)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
        ax.set_ylim(0, 1)
        ax.set_title(label.replace("_", " "))
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB: true positive green, false positive red, false negative blue."""
    codes = np.where(pred & truth, 1, np.where(pred & ~truth, 2, np.where(~pred & truth, 3, 0)))
    return ERROR_COLOURS[codes]


def best_worst_grid(records: list[dict], dataset, segmenter, out: Path, label: str, n: int = 3) -> Path:
    """Rows of image | truth | prediction | error map for the ``n`` best and worst slices of one label (by Dice,
    among slices whose truth is not empty); the chosen slices are predicted again by ``segmenter``."""
    scored = sorted((r for r in records if r["label"] == label and r["tp"] + r["fn"] > 0), key=lambda r: r["dice"])
    chosen = scored[-n:][::-1] + scored[:n] if len(scored) > 2 * n else scored[::-1]
    fig, axes = plt.subplots(max(len(chosen), 1), 4, figsize=(10, 2.6 * max(len(chosen), 1)), squeeze=False)
    rows = dataset.with_format("numpy")
    by_file = {f: i for i, f in enumerate(dataset["file"])}
    examples = [rows[by_file[r["file"]]] for r in chosen]
    spacings = [tuple(float(v) for v in e["spacing"]) for e in examples]
    probs = segmenter.probabilities([e["image"] for e in examples], spacings) if examples else []
    for ax_row, record, example, p in zip(axes, chosen, examples, probs, strict=False):
        # Vertebral bodies as they were scored: within the rows where they are labelled.
        rows = labelled_rows({k: [v] for k, v in example.items()}, 0) if label in EXTENT_LABELS else slice(None)
        truth = example[label][rows] > 0
        pred = segmenter.mask(p, label)[rows]
        panels = (example["image"][rows], truth, pred, error_map(pred, truth))
        titles = (f"{record['file']}", "truth", "prediction", f"error  Dice {record['dice']:.2f}")
        for ax, panel, title in zip(ax_row, panels, titles, strict=True):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle(
        f"{label.replace('_', ' ')}: best (top) and worst (bottom) slices; error map TP green, FP red, FN blue",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def training_curves(log: list[dict], labels: list[str], out: Path) -> Path:
    """Loss and validation Dice per epoch (dotted: on the validation slices with noise, where logged)."""
    epochs = [row["epoch"] for row in log]
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_ax.plot(epochs, [row["train_loss"] for row in log], label="train")
    loss_ax.plot(epochs, [row["val_loss"] for row in log], label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_title("loss")
    loss_ax.legend()
    for label in labels:
        dice_ax.plot(epochs, [row[f"train_{label}_all_dice"] for row in log], "--", label=f"{label} train")
        dice_ax.plot(epochs, [row[f"val_{label}_all_dice"] for row in log], label=f"{label} validation")
        noisy = [row.get(f"noisyval_{label}_all_dice", math.nan) for row in log]
        if not all(math.isnan(value) for value in noisy):
            dice_ax.plot(epochs, noisy, ":", label=f"{label} validation, noise added")
    dice_ax.set_xlabel("epoch")
    dice_ax.set_title("pooled Dice")
    dice_ax.set_ylim(0, 1)
    dice_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
