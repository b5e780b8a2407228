"""Epoch bookkeeping: the metrics logged per epoch, the score that chooses the best epoch, and the state that
checkpoints carry for early stopping."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from hemseg.data.volumes import PLANES
from hemseg.metrics import scores_from_counts

EPOCH_METRICS = ("accuracy", "dice", "iou", "precision", "recall")


def epoch_metrics(prefix: str, counts: torch.Tensor, planes: torch.Tensor, labels: list[str]) -> dict[str, float]:
    """Pooled accuracy, Dice, IoU, precision and recall per label, overall and per plane, from (N, C, 4) counts.

    Also ``<prefix>_<label>_all_dice_fg``: the mean Dice of slices whose truth is not empty.
    """
    row: dict[str, float] = {}
    counts, planes = counts.cpu(), planes.cpu()
    for c, label in enumerate(labels):
        groups = {"all": counts[:, c]} | {p: counts[planes == i, c] for i, p in enumerate(PLANES)}
        for group, group_counts in groups.items():
            scores = scores_from_counts(group_counts.sum(0))
            for metric in EPOCH_METRICS:
                row[f"{prefix}_{label}_{group}_{metric}"] = float(scores[metric]) if len(group_counts) else math.nan
        has_truth = (counts[:, c, 0] + counts[:, c, 2]) > 0
        per_slice = scores_from_counts(counts[has_truth, c])["dice"]
        row[f"{prefix}_{label}_all_dice_fg"] = float(per_slice.mean()) if has_truth.any() else math.nan
    return row


def read_log(path: Path, epochs: float = math.inf) -> list[dict]:
    """The rows of a ``training_log.csv`` up to ``epochs``, as numbers; none when there is no log yet.

    An empty cell (a column the run added on a resume, for the epochs before it) reads as NaN.
    """
    if not path.exists():
        return []
    with open(path) as f:
        rows = [{k: float(v) if v else math.nan for k, v in row.items()} for row in csv.DictReader(f)]
    return [{**row, "epoch": int(row["epoch"])} for row in rows if row["epoch"] <= epochs]


# Validation scores the best epoch can be chosen by: per label, the mean of these training_log.csv columns
# (``{}`` is the label).
SELECTION_SCORES = {
    "pooled_dice": ("val_{}_all_dice",),  # the paper's: Dice of the pixel counts pooled over all slices
    "dice_fg": ("val_{}_all_dice_fg",),  # mean Dice over the slices with the label: small and faint ones weigh in full
    # dice_fg on the validation slices as they are and with noise added (the recipe's validation.noise): an epoch that
    # only fits clean slices is not chosen over one that holds up on noisier scanners.
    "dice_fg_clean_and_noisy": ("val_{}_all_dice_fg", "noisyval_{}_all_dice_fg"),
}
DEFAULT_SELECTION = "pooled_dice"
NOISY_SELECTIONS = {name for name, columns in SELECTION_SCORES.items() if any("noisyval" in c for c in columns)}


def selection_score(row: dict, labels: list[str], select_by: str = DEFAULT_SELECTION) -> float:
    """What early stopping, the plateau scheduler and the best epoch go by: the mean over the labels and over the
    columns of ``SELECTION_SCORES[select_by]``."""
    columns = SELECTION_SCORES[select_by]
    return sum(float(row[column.format(label)]) for label in labels for column in columns) / (
        len(labels) * len(columns)
    )


class TrainingState:
    """Epoch and early-stopping bookkeeping, saved and restored with Accelerate's checkpoints."""

    def __init__(self, select_by: str = DEFAULT_SELECTION) -> None:
        self.epoch = 0  # epochs completed
        self.best_score = -math.inf
        self.best_epoch = 0
        self.select_by = select_by

    def stalled(self, patience: int) -> bool:
        """Whether ``patience`` epochs have passed without a new best: early stopping's test."""
        return self.epoch - self.best_epoch >= patience

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "select_by": self.select_by,
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.best_score, self.best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
        self.select_by = state.get("select_by", DEFAULT_SELECTION)  # checkpoints from before the choice existed
