import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from skimage.metrics import structural_similarity

from hemseg.metrics import (
    confusion_counts,
    contrast_to_noise,
    json_ready,
    scores_from_counts,
    slice_metrics,
    summarize,
)

nan = math.nan


def square(size=16, top=4, left=4, side=5):
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


EMPTY = np.zeros((16, 16), dtype=bool)
# Three rows of the table: both empty, truth empty only, prediction empty only.
CASES = {
    "both_empty": (EMPTY, EMPTY),
    "truth_empty": (square(), EMPTY),
    "pred_empty": (EMPTY, square()),
}
EXPECTED = {
    "both_empty": {"dice": 1, "f1": 1, "iou": 1, "precision": 1, "recall": 1, "ssim": 1, "hd95": nan, "nsd": nan},
    "truth_empty": {"dice": 0, "f1": 0, "iou": 0, "precision": 0, "recall": nan, "hd95": "diag", "nsd": 0},
    "pred_empty": {"dice": 0, "f1": 0, "iou": 0, "precision": nan, "recall": 0, "hd95": "diag", "nsd": 0},
}


def reference_ssim(pred, target):
    """The issue's definition of mask SSIM, straight from scikit-image."""
    return structural_similarity(
        pred.astype(float),
        target.astype(float),
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0)])
def test_every_cell_of_the_empty_mask_table(case, spacing):
    pred, target = CASES[case]
    result = slice_metrics(pred, target, spacing=spacing)
    for key, value in EXPECTED[case].items():
        if value == "diag":
            value = math.hypot(16 * spacing[0], 16 * spacing[1])
        assert same(result[key], value), key
    assert result["accuracy"] == pytest.approx((result["tp"] + result["tn"]) / 256)
    if case != "both_empty":  # SSIM is computed, not a rule, when one mask is empty
        expected_ssim = reference_ssim(pred, target)
        assert result["ssim"] == pytest.approx(expected_ssim)


def test_counts_and_ratios_on_a_hand_built_pair():
    pred = np.zeros((12, 12), dtype=np.uint8)
    target = np.zeros((12, 12), dtype=np.uint8)
    pred[0, 0:4] = 1  # 4 predicted pixels
    target[0, 2:8] = 1  # 6 true pixels, 2 shared
    r = slice_metrics(pred, target)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 2, 4, 136)
    assert r["dice"] == pytest.approx(4 / 10) and r["f1"] == r["dice"]
    assert r["iou"] == pytest.approx(2 / 8)
    assert r["precision"] == pytest.approx(2 / 4) and r["recall"] == pytest.approx(2 / 6)
    assert r["accuracy"] == pytest.approx(138 / 144)


def test_identical_masks_score_perfectly():
    r = slice_metrics(square(), square())
    assert r["dice"] == r["iou"] == r["precision"] == r["recall"] == r["ssim"] == r["nsd"] == 1
    assert r["hd95"] == 0


def test_torch_masks_are_accepted():
    r = slice_metrics(torch.from_numpy(square()), torch.from_numpy(square(left=5)).int())
    assert r["tp"] == 20


def test_not_binary_and_mismatched_masks_are_refused():
    with pytest.raises(ValueError, match="not binary"):
        slice_metrics(square().astype(np.uint8) * 255, square())
    with pytest.raises(ValueError, match="differ in size"):
        slice_metrics(square(16), square(17))
    with pytest.raises(ValueError, match="2D"):
        slice_metrics(np.zeros((2, 16, 16)), np.zeros((2, 16, 16)))


def brute_boundary(mask):
    """Mask pixels with a 4-neighbour outside the mask or outside the image."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.argwhere(mask & ~inner).astype(float)


def brute_hd95(pred, target, spacing):
    a = brute_boundary(pred) * spacing
    b = brute_boundary(target) * spacing
    d = cdist(a, b)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_hd95_of_two_single_pixel_squares_k_apart_is_k(k):
    pred, target = np.zeros((20, 20), bool), np.zeros((20, 20), bool)
    pred[5, 2] = True
    target[5, 2 + k] = True
    assert slice_metrics(pred, target)["hd95"] == pytest.approx(k)
    assert slice_metrics(pred, target, spacing=(1.0, 0.5))["hd95"] == pytest.approx(k / 2)


@pytest.mark.parametrize("k", [2, 6, 15])
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.3)])
def test_hd95_of_two_squares_k_apart(k, spacing):
    pred, target = square(32, 8, 2, 10), square(32, 8, 2 + k, 10)
    result = slice_metrics(pred, target, spacing=spacing)["hd95"]
    assert result == pytest.approx(brute_hd95(pred, target, np.array(spacing)))
    # Squares shifted by k: no boundary point is farther than k from the other boundary, and the
    # leading edge is exactly k away from it.
    assert 0 < result <= k * spacing[1] + 1e-9


def test_hd95_of_squares_far_apart_is_the_edge_distance():
    pred, target = square(40, 5, 0, 6), square(40, 5, 20, 6)
    assert slice_metrics(pred, target)["hd95"] == pytest.approx(brute_hd95(pred, target, np.ones(2)))


def test_nsd_counts_boundary_points_within_tolerance():
    pred, target = square(32, 8, 8, 10), square(32, 8, 11, 10)  # shifted by 3 columns
    assert slice_metrics(pred, target, nsd_tolerance=3.0)["nsd"] == 1.0
    within = slice_metrics(pred, target, nsd_tolerance=2.0)["nsd"]
    a, b = brute_boundary(pred), brute_boundary(target)
    d = cdist(a, b)
    expected = ((d.min(axis=1) <= 2).sum() + (d.min(axis=0) <= 2).sum()) / (len(a) + len(b))
    assert within == pytest.approx(expected) and 0 < within < 1


def test_ssim_matches_skimage_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred, target = rng.random((24, 30)) > 0.6, rng.random((24, 30)) > 0.6
        expected = reference_ssim(pred, target)
        assert slice_metrics(pred, target)["ssim"] == pytest.approx(expected)


def test_ssim_is_nan_on_images_too_small_for_its_window():
    assert math.isnan(slice_metrics(np.eye(8, dtype=bool), np.eye(8, dtype=bool))["ssim"])


def test_lesion_counts_use_eight_connectivity():
    target = np.zeros((20, 20), bool)
    target[2, 2] = target[3, 3] = True  # one lesion: diagonal neighbours are connected
    target[10:12, 10:12] = True  # a second lesion, missed
    pred = np.zeros((20, 20), bool)
    pred[3, 3] = True  # touches the first lesion
    pred[16:18, 2:4] = True  # a false alarm
    r = slice_metrics(pred, target)
    assert (r["lesion_tp"], r["lesion_fn"], r["lesion_fp"]) == (1, 1, 1)


def record(pred, target, plane):
    return {**slice_metrics(pred, target), "plane": plane}


def test_summary_per_plane_and_overall():
    records = [
        record(square(), square(), "axial"),  # perfect
        record(EMPTY, EMPTY, "axial"),  # empty and right
        record(square(), EMPTY, "sagittal"),  # false alarm
        record(EMPTY, square(), "sagittal"),  # miss
    ]
    s = summarize(records)
    assert list(s) == ["axial", "sagittal", "overall"]
    axial, sagittal, overall = s["axial"], s["sagittal"], s["overall"]
    assert axial["n"] == 2 and axial["n_fg"] == 1
    assert axial["dice_fg"] == 1 and axial["dice_all"] == 1
    assert axial["hd95"] == 0 and axial["hd95_nan"] == 1
    assert axial["slice_sensitivity"] == 1 and axial["slice_false_alarm_rate"] == 0
    assert sagittal["dice_fg"] == 0 and sagittal["dice_all"] == 0
    assert sagittal["precision_nan"] == 1 and sagittal["recall_nan"] == 1
    assert sagittal["precision"] == 0 and sagittal["recall"] == 0
    assert sagittal["slice_sensitivity"] == 0 and sagittal["slice_false_alarm_rate"] == 1
    assert overall["n"] == 4 and overall["n_fg"] == 2
    assert overall["dice_fg"] == pytest.approx(0.5) and overall["dice_all"] == pytest.approx(0.5)
    # 25 true pixels found, 25 false alarms, 25 missed
    assert overall["pooled_dice"] == pytest.approx(50 / 100) and overall["pooled_iou"] == pytest.approx(25 / 75)
    assert overall["pooled_precision"] == pytest.approx(0.5) and overall["pooled_recall"] == pytest.approx(0.5)
    assert overall["lesion_tp"] == 1 and overall["lesion_fp"] == 1 and overall["lesion_fn"] == 1
    assert overall["lesion_f1"] == pytest.approx(0.5)


def test_summary_mean_of_only_nans_is_nan_and_null_in_json():
    s = summarize([record(EMPTY, EMPTY, "coronal")])["coronal"]
    assert math.isnan(s["hd95"]) and s["hd95_nan"] == 1
    assert math.isnan(s["dice_fg"]) and math.isnan(s["slice_sensitivity"])
    assert json.loads(json.dumps(json_ready(s)))["hd95"] is None


def test_batched_torch_counts_give_the_same_numbers():
    rng = np.random.default_rng(1)
    preds = rng.random((6, 2, 16, 16)) > 0.7
    targets = rng.random((6, 2, 16, 16)) > 0.8
    preds[0, 0] = targets[0, 0] = False  # both empty
    preds[1, 1] = False  # prediction empty only
    targets[2, 0] = False  # truth empty only
    counts = confusion_counts(torch.from_numpy(preds), torch.from_numpy(targets))
    assert counts.shape == (6, 2, 4)
    scores = scores_from_counts(counts)
    for b in range(6):
        for c in range(2):
            expected = slice_metrics(preds[b, c], targets[b, c])
            assert counts[b, c].tolist() == [expected[k] for k in ("tp", "fp", "fn", "tn")]
            for key in ("dice", "iou", "precision", "recall", "accuracy"):
                assert same(float(scores[key][b, c]), expected[key]), key
    pooled = scores_from_counts(counts[:, 0].sum(0))
    summary = summarize([{**slice_metrics(preds[b, 0], targets[b, 0]), "plane": "x"} for b in range(6)])["overall"]
    for key in ("dice", "iou", "precision", "recall"):
        assert float(pooled[key]) == pytest.approx(summary[f"pooled_{key}"])


def checkerboard_with_square(value: float, size: int = 20, top: int = 8, side: int = 4):
    """Background of 0 and 2 in a checkerboard (mean 1, std 1 over any even-sided patch) with a flat square."""
    image = (np.indices((size, size)).sum(0) % 2 * 2).astype(float)
    mask = square(size, top, top, side)
    image[mask] = value
    return image, mask


def test_contrast_to_noise_of_a_square_on_a_checkerboard():
    # The ring is the square grown by 3 px on every side, minus the square: 10x10 - 4x4 pixels, half 0, half 2.
    image, mask = checkerboard_with_square(5.0)
    assert contrast_to_noise(image, mask) == pytest.approx((5 - 1) / 1)
    image, mask = checkerboard_with_square(-1.0)
    assert contrast_to_noise(image, mask) == pytest.approx(-2.0)  # darker than its surroundings
    ring = np.zeros_like(mask)
    ring[7:13, 7:13] = True  # grown by 1 px only
    ring &= ~mask
    expected = (5 - image[ring].mean()) / image[ring].std()
    image, mask = checkerboard_with_square(5.0)
    assert contrast_to_noise(image, mask, ring=1) == pytest.approx(expected)


def test_contrast_to_noise_edge_cases():
    image, mask = checkerboard_with_square(5.0, top=0)  # square in the corner: the ring is cut by the edge
    ring = np.zeros_like(mask)
    ring[:7, :7] = True
    ring &= ~mask
    assert contrast_to_noise(image, mask) == pytest.approx((5 - image[ring].mean()) / image[ring].std())
    assert math.isnan(contrast_to_noise(image, np.zeros_like(mask)))  # no truth
    flat = np.ones((20, 20))
    flat[mask] = 3
    assert math.isnan(contrast_to_noise(flat, mask))  # surroundings without noise
    assert math.isnan(contrast_to_noise(np.ones((4, 4)), np.ones((4, 4), bool)))  # nothing around it
    with pytest.raises(ValueError, match="differ in size"):
        contrast_to_noise(np.ones((5, 5)), mask)


def test_confusion_counts_leave_out_the_pixels_not_scored():
    pred = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    target = torch.zeros_like(pred)
    pred[..., 0, :] = True  # a false alarm on the first row ...
    target[..., 3, 0] = True  # ... and a miss on the last
    valid = torch.ones_like(pred)
    valid[..., 0, :] = False  # the first row is not scored
    assert confusion_counts(pred, target)[0, 0].tolist() == [0, 4, 1, 11]
    assert confusion_counts(pred, target, valid)[0, 0].tolist() == [0, 0, 1, 11]
