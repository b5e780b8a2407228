"""Segmentation metrics for binary masks, per slice and summarised per plane.

Notation: P is the predicted mask, G the ground truth; TP, FP, FN, TN count pixels; N = TP + FP + FN + TN.

=========  ======================  ============  =============  =============
metric     formula                 P, G empty    G empty only   P empty only
=========  ======================  ============  =============  =============
dice, f1   2TP / (2TP + FP + FN)   1             0              0
iou        TP / (TP + FP + FN)     1             0              0
precision  TP / (TP + FP)          1             0              NaN
recall     TP / (TP + FN)          1             NaN            0
accuracy   (TP + TN) / N           defined       defined        defined
ssim       Wang et al. 2004        1             computed       computed
hd95       see ``hd95``            NaN           diagonal       diagonal
nsd        see ``nsd``             NaN           0              0
=========  ======================  ============  =============  =============

NaN means "undefined for this slice": summaries leave it out of means and count it. Accuracy is reported for
comparison with the paper but is dominated by background; never choose a model by it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

CROSS = ndimage.generate_binary_structure(2, 1)  # 3x3 cross: the erosion that defines a boundary
EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity for lesions
DEFAULT_NSD_TOLERANCE = 2.0  # in the units of `spacing` (mm for MRI slices)
COUNT_KEYS = ("tp", "fp", "fn", "tn", "lesion_tp", "lesion_fp", "lesion_fn")
MEAN_KEYS = ("iou", "precision", "recall", "accuracy", "f1", "ssim", "hd95", "nsd")


def as_binary_mask(mask: np.ndarray | torch.Tensor, name: str = "mask") -> np.ndarray:
    """Return a 2D boolean array; raise ValueError when the mask is not 2D or holds values other than 0 and 1."""
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2D mask, got shape {array.shape}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        values = np.unique(array)[:5]
        raise ValueError(f"{name} is not binary: it holds values such as {values.tolist()}, expected only 0 and 1")
    return array.astype(bool)


def overlap_scores(tp: float, fp: float, fn: float) -> dict[str, float]:
    """Dice (= F1), IoU, precision and recall from counts, with the empty-mask rules of the module table.

    When TP = FP = FN = 0 (both masks empty) every score is 1; otherwise a zero denominator gives NaN.
    """
    if tp + fp + fn == 0:
        return {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}

    def ratio(num: float, den: float) -> float:
        return num / den if den else math.nan

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
    }


def boundary(mask: np.ndarray) -> np.ndarray:
    """Mask minus its erosion by a 3x3 cross; pixels on the image edge count as boundary."""
    return mask & ~ndimage.binary_erosion(mask, structure=CROSS)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Distance from each boundary pixel of ``a`` to the nearest boundary pixel of ``b``, in units of spacing."""
    return ndimage.distance_transform_edt(~boundary(b), sampling=spacing)[boundary(a)]


def image_diagonal(shape: tuple[int, int], spacing: tuple[float, float]) -> float:
    """Length of the image's diagonal, sqrt((H * spacing_row)^2 + (W * spacing_col)^2)."""
    return math.hypot(shape[0] * spacing[0], shape[1] * spacing[1])


def hd95(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """95th-percentile Hausdorff distance between the boundaries of two boolean masks.

    The larger of the two directed 95th percentiles (numpy's linear interpolation) of ``surface_distances``.
    Both empty: NaN. Exactly one empty: the image diagonal, the worst distance the image allows.
    """
    if not pred.any() and not target.any():
        return math.nan
    if not pred.any() or not target.any():
        return image_diagonal(pred.shape, spacing)
    return float(
        max(
            np.percentile(surface_distances(pred, target, spacing), 95),
            np.percentile(surface_distances(target, pred, spacing), 95),
        )
    )


def nsd(
    pred: np.ndarray,
    target: np.ndarray,
    spacing: tuple[float, float] = (1.0, 1.0),
    tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> float:
    """Normalised surface Dice (Nikolov et al. 2021) at ``tolerance`` (units of spacing).

    (|{p in dP : d(p, dG) <= tau}| + |{g in dG : d(g, dP) <= tau}|) / (|dP| + |dG|), with dX the boundary
    pixels of X. Both empty: NaN. Exactly one empty: 0.
    """
    if not pred.any() and not target.any():
        return math.nan
    if not pred.any() or not target.any():
        return 0.0
    d_pg = surface_distances(pred, target, spacing)
    d_gp = surface_distances(target, pred, spacing)
    return float(((d_pg <= tolerance).sum() + (d_gp <= tolerance).sum()) / (d_pg.size + d_gp.size))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) of the masks as floats in [0, 1].

    skimage's ``structural_similarity`` with a Gaussian window (sigma 1.5, 11x11), data range 1 and population
    covariance. Both empty: 1. An image under 11 pixels on a side is too small for the window: NaN.
    """
    if not pred.any() and not target.any():
        return 1.0
    if min(pred.shape) < 11:
        return math.nan
    return float(
        structural_similarity(
            pred.astype(np.float64),
            target.astype(np.float64),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def contrast_to_noise(image: np.ndarray, mask: np.ndarray, ring: int = 3) -> float:
    """How much the masked structure stands out from what surrounds it, in units of that surrounding's noise.

    (mean(I in M) - mean(I in R)) / std(I in R), where R is the ring of pixels outside M within ``ring`` pixels
    of it (8-connected dilation, clipped at the image edge) and std is the population standard deviation.
    Negative for a structure darker than its surroundings. NaN when M is empty, R is empty or R is flat.
    Only the truth's own image enters, so the value describes the case, not a model.
    """
    mask = as_binary_mask(mask)
    image = np.asarray(image, dtype=np.float64)
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in size")
    if not mask.any():
        return math.nan
    around = image[ndimage.binary_dilation(mask, structure=EIGHT, iterations=ring) & ~mask]
    if around.size == 0 or around.std() == 0:
        return math.nan
    return float((image[mask].mean() - around.mean()) / around.std())


def lesion_counts(pred: np.ndarray, target: np.ndarray) -> dict[str, int]:
    """Lesion-wise detection with 8-connected components.

    A true lesion (component of G) is detected (lesion_tp) when any predicted pixel overlaps it, else it is
    missed (lesion_fn); a predicted component that overlaps no true lesion is a false alarm (lesion_fp).
    """
    g_labels, n_g = ndimage.label(target, structure=EIGHT)
    p_labels, n_p = ndimage.label(pred, structure=EIGHT)
    detected = np.count_nonzero(np.unique(g_labels[pred]))  # component ids under P, 0 (background) excluded
    confirmed = np.count_nonzero(np.unique(p_labels[target]))
    return {"lesion_tp": int(detected), "lesion_fn": int(n_g - detected), "lesion_fp": int(n_p - confirmed)}


def overlap_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The counting part of ``slice_metrics`` (no SSIM, HD95 or NSD) for two boolean masks of one shape: pixel
    counts ``tp fp fn tn``, their overlap scores, accuracy, f1 and the lesion counts."""
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred & ~target))
    fn = int(np.count_nonzero(~pred & target))
    tn = int(pred.size - tp - fp - fn)
    scores = overlap_scores(tp, fp, fn)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        **scores,
        "accuracy": (tp + tn) / pred.size,
        "f1": scores["dice"],
        **lesion_counts(pred, target),
    }


def slice_metrics(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    spacing: tuple[float, float] = (1.0, 1.0),
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> dict[str, float]:
    """All metrics of the module table for one pair of 2D binary masks (bool, or 0/1 numbers).

    ``spacing`` is (row, column) pixel size; hd95 and nsd are in its units. The result also holds the pixel
    counts ``tp fp fn tn`` and the lesion counts ``lesion_tp lesion_fp lesion_fn`` so that summaries can pool.
    """
    p = as_binary_mask(pred, "prediction")
    g = as_binary_mask(target, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in size")
    spacing = (float(spacing[0]), float(spacing[1]))
    return {
        **overlap_metrics(p, g),
        "ssim": ssim(p, g),
        "hd95": hd95(p, g, spacing),
        "nsd": nsd(p, g, spacing, nsd_tolerance),
    }


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def _summarize_group(records: list[Mapping[str, Any]]) -> dict[str, float]:
    sums = {key: sum(int(r[key]) for r in records) for key in COUNT_KEYS}
    has_truth = [r["tp"] + r["fn"] > 0 for r in records]
    has_pred = [r["tp"] + r["fp"] > 0 for r in records]
    out: dict[str, float] = {"n": len(records), "n_fg": sum(has_truth)}
    out["dice_fg"] = _mean(r["dice"] for r, t in zip(records, has_truth, strict=True) if t)
    out["dice_all"] = _mean(r["dice"] for r in records)
    out.update({f"pooled_{k}": v for k, v in overlap_scores(sums["tp"], sums["fp"], sums["fn"]).items()})
    for key in MEAN_KEYS:
        values = [float(r[key]) for r in records]
        out[key] = _mean(v for v in values if not math.isnan(v))
        out[f"{key}_nan"] = sum(math.isnan(v) for v in values)
    out["slice_sensitivity"] = _mean(float(p) for p, t in zip(has_pred, has_truth, strict=True) if t)
    out["slice_false_alarm_rate"] = _mean(float(p) for p, t in zip(has_pred, has_truth, strict=True) if not t)
    lesion = overlap_scores(sums["lesion_tp"], sums["lesion_fp"], sums["lesion_fn"])
    out.update(lesion_precision=lesion["precision"], lesion_recall=lesion["recall"], lesion_f1=lesion["dice"], **sums)
    return out


def summarize(records: Iterable[Mapping[str, Any]], by: str | None = "plane") -> dict[str, dict[str, float]]:
    """Summaries per value of ``record[by]`` (sorted) and ``"overall"``, from ``slice_metrics`` records.

    Each summary holds ``n`` (slices), ``n_fg`` (slices whose truth is not empty), ``dice_fg`` (mean Dice over
    those), ``dice_all`` (mean Dice over all slices), ``pooled_dice/iou/precision/recall`` (from the summed
    pixel counts, same empty rules), the NaN-skipping means of iou, precision, recall, accuracy, f1, ssim, hd95
    and nsd with ``<metric>_nan`` counting the NaNs left out, ``slice_sensitivity`` (share of slices with truth
    whose prediction is not empty), ``slice_false_alarm_rate`` (share of slices without truth whose prediction
    is not empty), lesion-wise precision, recall and F1 from the summed lesion counts, and the summed counts.
    A mean over no values is NaN, never 0.
    """
    records = list(records)
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    if by is not None:
        for record in records:
            groups[str(record[by])].append(record)
    result = {key: _summarize_group(groups[key]) for key in sorted(groups)}
    result["overall"] = _summarize_group(records)
    return result


def json_ready(value: Any) -> Any:
    """Replace NaN floats by None (null in JSON) in nested dicts and lists."""
    if isinstance(value, Mapping):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Batched pixel counts for training: (B, C, H, W) binary tensors -> (B, C, 4) int64 [tp, fp, fn, tn].

    ``valid`` (same shape, nonzero where scored) leaves the other pixels out of every count. Stays on the tensors'
    device; counts from several processes can be gathered or summed.
    """
    p, g = pred.bool(), target.bool()
    scored = torch.ones_like(p) if valid is None else valid.bool()
    dims = (-2, -1)
    tp = (p & g & scored).sum(dims)
    fp = (p & ~g & scored).sum(dims)
    fn = (~p & g & scored).sum(dims)
    tn = (~p & ~g & scored).sum(dims)
    return torch.stack([tp, fp, fn, tn], dim=-1)


def scores_from_counts(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dice, IoU, precision, recall and accuracy from (..., 4) counts, with the same empty rules as
    ``overlap_scores``: 1 when TP = FP = FN = 0, NaN for another zero denominator."""
    tp, fp, fn, tn = counts.double().unbind(-1)
    both_empty = (tp + fp + fn) == 0

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        value = torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, math.nan))
        return torch.where(both_empty, torch.ones_like(value), value)

    return {
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
    }
