"""Pieces of the training loop in train.py: resident tensors, losses, epoch metrics, resumable state."""

from __future__ import annotations

import csv
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hemseg.metrics import scores_from_counts
from hemseg.speed import cpu_cores
from hemseg.transforms import preprocess, to_model_grid
from hemseg.volumes import PLANES

EPOCH_METRICS = ("accuracy", "dice", "iou", "precision", "recall")
LOAD_CHUNK = 64  # slices per read in load_tensors
IMAGE_DTYPE, MASK_DTYPE = torch.float16, torch.uint8  # of the resident tensors: half the memory of float32 images


@dataclass
class SliceTensors:
    """A whole data set preprocessed once: it then stays resident on the training device."""

    images: torch.Tensor  # (N, 1, S, S) float16 in [0, 1]
    masks: torch.Tensor  # (N, labels, S, S) uint8 in {0, 1}
    planes: torch.Tensor  # (N,) index into PLANES
    splits: np.ndarray  # (N,) "train" / "val" / "test"

    def to(self, device: torch.device) -> SliceTensors:
        return SliceTensors(self.images.to(device), self.masks.to(device), self.planes.to(device), self.splits)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float images, float masks and planes of the slices ``idx`` on ``device``; copied there only when the set
        is kept in host memory (``resident_device``)."""
        idx = idx.to(self.images.device)
        images, masks = self.images[idx].to(device).float(), self.masks[idx].to(device).float()
        return images, masks, self.planes[idx].to(device)


def slice_bytes(count: int, labels: int, size: int) -> int:
    """Memory of ``count`` preprocessed slices on a ``size`` grid: a float16 image and a uint8 mask per label."""
    return count * size * size * (IMAGE_DTYPE.itemsize + labels * MASK_DTYPE.itemsize)


def available_memory() -> int | None:
    """Bytes of host memory available to new allocations (Linux's MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_host_memory(needed: int, processes: int = 1) -> None:
    """Refuse, with the numbers, a data set whose preprocessed tensors (one copy per process on this machine)
    would not fit in the memory available, instead of running out of memory while they are filled."""
    available = available_memory()
    if available is not None and needed * processes > available:
        copies = f" x {processes} processes on this machine" if processes > 1 else ""
        raise ValueError(
            f"the preprocessed slices need {needed / 2**30:.1f} GiB{copies}, but only {available / 2**30:.1f} GiB "
            "of memory is available: train on a smaller --image-size, on fewer slices or in fewer processes"
        )


def resident_device(needed: int, device: torch.device) -> torch.device:
    """Where the preprocessed set stays: on the training device when it takes at most half of its free memory
    (the rest is for the model, its activations and the optimiser), else in host memory, a batch copied at a time."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if needed <= free // 2 else torch.device("cpu")


def load_tensors(
    dataset: datasets.Dataset, labels: list[str], preprocessing: dict, progress: bool = True, threads: int | None = None
) -> SliceTensors:
    """Preprocess every slice of ``dataset`` with the model's own contract (``hemseg.transforms.preprocess``).

    Filled in place: collecting per-slice tensors and concatenating them would hold the data set twice at the peak
    (4.6 GB instead of 2.3 for 15,675 slices on a 192 grid). Chunks of slices are read and preprocessed by
    ``threads`` threads (default: one per CPU core, at most 8): PNG decoding and torch's resizing release the GIL,
    so 2,556 slices took 2.8-3.7 s with 2 threads against 3.2-5.1 s with one on a 2-core machine (README, Training).
    """
    size = tuple(preprocessing["size"])
    images = torch.empty(len(dataset), 1, *size, dtype=IMAGE_DTYPE)
    masks = torch.empty(len(dataset), len(labels), *size, dtype=MASK_DTYPE)
    rows = dataset.select_columns(["image", *labels]).with_format("numpy")

    def fill(start: int) -> int:
        chunk = rows[start : start + LOAD_CHUNK]  # one read per chunk: datasets' per-row overhead is ~1 ms
        for j, image in enumerate(chunk["image"]):
            images[start + j] = preprocess(image, preprocessing)[0]
            stacked = torch.from_numpy(np.stack([chunk[label][j] > 0 for label in labels]).astype(np.uint8))
            masks[start + j] = to_model_grid(stacked[None], size, mode="nearest")[0]
        return len(chunk["image"])

    bar = tqdm(total=len(dataset), desc="preprocessing", disable=not progress)
    with ThreadPoolExecutor(threads or min(8, cpu_cores())) as pool, bar:
        for done in pool.map(fill, range(0, len(dataset), LOAD_CHUNK)):
            bar.update(done)
    plane_names = dataset.features["plane"].names
    planes = torch.tensor([PLANES.index(plane_names[p]) for p in dataset["plane"]])
    return SliceTensors(images, masks, planes, np.asarray(dataset["split"]))


def soft_dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0, per_sample: bool = False
) -> torch.Tensor:
    """1 - soft Dice, averaged over the (sample, label) pairs whose truth is not empty; 0 when none is.
    ``per_sample``: one such average per sample, shape (N,).

    Empty truths are left to the cross-entropy term: there soft Dice would be 1 - eps / (sum of p + eps), a
    penalty near 1 for any faint response across the image, which teaches a model to miss small lesions. This
    matches the reported Dice_fg, the mean Dice of slices with the label.
    """
    probs = torch.sigmoid(logits.float())
    dims = (-2, -1)
    intersection = (probs * targets).sum(dims)
    truth = targets.sum(dims)
    dice = (2 * intersection + eps) / (probs.sum(dims) + truth + eps)
    has_truth = truth > 0
    terms = torch.where(has_truth, 1 - dice, 0)
    if per_sample:
        return terms.sum(-1) / has_truth.sum(-1).clamp(min=1)
    return terms.sum() / has_truth.sum().clamp(min=1)


def make_loss(name: str, per_sample: bool = False):
    """``bce`` (the paper's binary cross-entropy) or ``bce+dice``; a scalar for the batch, or with ``per_sample``
    each sample's own loss, shape (N,) (what that sample alone would give)."""
    if name not in ("bce", "bce+dice"):
        raise ValueError(f"unknown loss {name!r}: choose bce or bce+dice")

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none" if per_sample else "mean")
        if per_sample:
            bce = bce.flatten(1).mean(1)
        return bce + soft_dice_loss(logits, targets, per_sample=per_sample) if name == "bce+dice" else bce

    return loss


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
    # dice_fg on the validation slices as they are and with noise added (train.py --val-noise): an epoch that
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
