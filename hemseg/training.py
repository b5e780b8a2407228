"""Pieces of the training loop in train.py: resident tensors, losses, epoch metrics, resumable state."""

from __future__ import annotations

import math
from dataclasses import dataclass

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hemseg.metrics import scores_from_counts
from hemseg.transforms import preprocess, to_model_grid
from hemseg.volumes import PLANES

EPOCH_METRICS = ("accuracy", "dice", "iou", "precision", "recall")


@dataclass
class SliceTensors:
    """A whole data set preprocessed once: it then stays resident on the training device."""

    images: torch.Tensor  # (N, 1, S, S) float16 in [0, 1]
    masks: torch.Tensor  # (N, labels, S, S) uint8 in {0, 1}
    planes: torch.Tensor  # (N,) index into PLANES
    splits: np.ndarray  # (N,) "train" / "val" / "test"

    def to(self, device: torch.device) -> SliceTensors:
        return SliceTensors(self.images.to(device), self.masks.to(device), self.planes.to(device), self.splits)


def load_tensors(
    dataset: datasets.Dataset, labels: list[str], preprocessing: dict, progress: bool = True
) -> SliceTensors:
    """Preprocess every slice of ``dataset`` with the model's own contract (``hemseg.transforms.preprocess``)."""
    size = tuple(preprocessing["size"])
    images, masks = [], []
    rows = dataset.select_columns(["image", *labels]).with_format("numpy")
    for example in tqdm(rows, desc="preprocessing", disable=not progress):
        images.append(preprocess(example["image"], preprocessing).half())
        stacked = torch.from_numpy(np.stack([example[label] > 0 for label in labels]).astype(np.uint8))
        masks.append(to_model_grid(stacked[None], size, mode="nearest"))
    plane_names = dataset.features["plane"].names
    planes = torch.tensor([PLANES.index(plane_names[p]) for p in dataset["plane"]])
    return SliceTensors(torch.cat(images), torch.cat(masks), planes, np.asarray(dataset["split"]))


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice, averaged over the (sample, label) pairs whose truth is not empty; 0 when none is.

    Empty truths are left to the cross-entropy term: there soft Dice would be 1 - eps / (sum of p + eps), a
    penalty near 1 for any faint response across the image, which teaches a model to miss small lesions. This
    matches the reported Dice_fg, the mean Dice of slices with the label.
    """
    probs = torch.sigmoid(logits.float())
    dims = (-2, -1)
    intersection = (probs * targets).sum(dims)
    dice = (2 * intersection + eps) / (probs.sum(dims) + targets.sum(dims) + eps)
    has_truth = targets.sum(dims) > 0
    return torch.where(has_truth, 1 - dice, 0).sum() / has_truth.sum().clamp(min=1)


def make_loss(name: str):
    """``bce`` (the paper's binary cross-entropy) or ``bce+dice``."""
    if name == "bce":
        return F.binary_cross_entropy_with_logits
    if name == "bce+dice":
        return lambda logits, targets: (
            F.binary_cross_entropy_with_logits(logits, targets) + soft_dice_loss(logits, targets)
        )
    raise ValueError(f"unknown loss {name!r}: choose bce or bce+dice")


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


class TrainingState:
    """Epoch and early-stopping bookkeeping, saved and restored with Accelerate's checkpoints."""

    def __init__(self) -> None:
        self.epoch = 0  # epochs completed
        self.best_score = -math.inf
        self.best_epoch = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.best_score, self.best_epoch = state["epoch"], state["best_score"], state["best_epoch"]
