import csv

import numpy as np
import pytest
from conftest import run

from hemseg.data.dataset import load
from hemseg.evaluation.evaluate import predicted_batches
from hemseg.inference.segmenter import Segmenter
from hemseg.lab.robustness import (
    SHIFTS,
    bias_field,
    crop,
    gamma,
    half_resolution,
    inverted,
    noise,
    png,
    shifted,
    thick_slices,
)


def ramp() -> np.ndarray:
    """A 40x50 uint8 slice: a horizontal ramp 0..245."""
    return np.tile((np.arange(50) * 5).astype(np.uint8), (40, 1))


def test_shifts_keep_size_and_type_and_do_what_they_say():
    image, rng = ramp(), np.random.default_rng(0)
    columns = {"vertebral_body": np.zeros_like(image)}
    for name, viewer in SHIFTS.items():
        view = viewer(image, (1.0, 1.0), columns, rng)
        assert view.image.dtype == image.dtype, name
        assert view.image.shape == image[view.region].shape or name.startswith("png"), name
    assert np.array_equal(SHIFTS["none"](image, (1.0, 1.0), columns, rng).image, image)
    flipped = shifted(image, inverted, rng)
    assert flipped[0, 0] == 245 and flipped[0, -1] == 0
    darker = shifted(image, gamma(2.0), rng)
    assert darker[0, -1] == 245 and darker[0, 25] == round(245 * (125 / 245) ** 2)
    # Noise sd is a share of the 0.5-99.5 percentile range (about 244 here); clipping at 0 and 255 narrows it a bit.
    noisy = shifted(image, noise(0.1), rng).astype(float) - image
    assert 20 < noisy[:, 5:45].std() < 28
    blurred = shifted(image, half_resolution, rng)
    assert np.abs(blurred.astype(int) - image).mean() < 3  # a ramp survives half resolution nearly unchanged
    stripes = np.zeros((60, 40), np.uint8)
    stripes[::2] = 200  # a line pattern one row apart, down the rows only
    thick = shifted(stripes, thick_slices, rng).astype(int)
    assert thick.std() < 0.2 * stripes.std()  # rows are averaged ...
    assert np.array_equal(shifted(stripes.T.copy(), thick_slices, rng), stripes.T)  # ... columns are not
    field = shifted(image, bias_field, rng)
    assert field[0, -1] > image[0, -1] and field[0, 1] < image[0, 1]


def test_noise_is_the_same_for_the_same_seed():
    image = ramp()
    first = shifted(image, noise(0.08), np.random.default_rng([0, 3]))
    assert np.array_equal(first, shifted(image, noise(0.08), np.random.default_rng([0, 3])))
    assert not np.array_equal(first, shifted(image, noise(0.08), np.random.default_rng([0, 4])))


@pytest.mark.slow  # three command-line runs
def test_robustness_command_scores_each_shift_against_none(trained_model, tiny_slices, tmp_path):
    out = tmp_path / "shifts.csv"
    model_and_data = ["--model", str(trained_model), "--data", str(tiny_slices), "--split", "val"]
    result = run(["-m", "hemseg", "lab", "robustness", *model_and_data, "--shifts", "inverted", "--csv", str(out)])
    with open(out) as f:
        table = list(csv.DictReader(f))
    assert [(r["shift"], r["label"]) for r in table] == [
        (shift, label) for shift in ("none", "inverted") for label in ("vertebral_body", "hemangioma")
    ]
    assert "| none | vertebral_body |" in result.stdout and "| inverted | hemangioma |" in result.stdout
    # No shift is what `calibrate` reports without a seed for the same model and split.
    run(["-m", "hemseg", "lab", "calibrate", *model_and_data, "--csv", str(tmp_path / "seeds.csv")])
    with open(tmp_path / "seeds.csv") as f:
        plain = {r["label"]: r for r in csv.DictReader(f) if r["seed"] == ""}
    for row in table[:2]:
        for key in ("dice_fg", "pooled_dice", "slice_false_alarm_rate", "lesion_f1"):
            assert float(row[key]) == pytest.approx(float(plain[row["label"]][key]), nan_ok=True)
    assert run(["-m", "hemseg", "lab", "robustness", *model_and_data, "--shifts", "blur"], check=False).returncode == 2


def test_the_model_sees_the_shifted_slices(trained_model, tiny_slices):
    segmenter, dataset = Segmenter.load(str(trained_model)), load(tiny_slices)
    _, plain = predicted_batches(segmenter, dataset, "val", 8, "plain", False)
    _, flipped = predicted_batches(segmenter, dataset, "val", 8, "inverted", False, transform=SHIFTS["inverted"])
    for (_, batch, probs, _), (_, same_batch, other, _) in zip(plain, flipped, strict=True):
        assert np.array_equal(batch["image"][0], same_batch["image"][0])  # the stored slices stay as they are
        assert not np.allclose(probs[0], other[0])


def test_a_crop_keeps_a_square_of_the_spine_and_is_scored_on_it():
    image = np.zeros((300, 200), np.uint8)
    bodies = np.zeros_like(image)
    bodies[200:260, 40:80] = 255  # the labelled bodies low and left in a wide slice
    view = crop(80.0)(image, (0.5, 1.0), {"vertebral_body": bodies}, np.random.default_rng(0))
    rows, cols = view.region
    assert (rows.stop - rows.start, cols.stop - cols.start) == (160, 80)  # 80 mm at 0.5 mm rows and 1 mm columns
    assert rows.start <= 200 and rows.stop >= 260 and cols.start <= 40 and cols.stop >= 80  # around the bodies
    assert view.spacing == (0.5, 1.0) and view.image.shape == (160, 80)
    narrow = crop(120.0)(image[:, :60], (1.0, 1.0), {"vertebral_body": bodies[:, :60]}, None)
    assert narrow.image.shape == (120, 60)  # clamped to a slice narrower than the crop


def test_a_zoomed_png_loses_its_pixel_size_and_is_scored_on_the_stored_slice(trained_model, tiny_slices):
    image = ramp()
    view = png(2.0)(image, (1.0, 1.0), {}, np.random.default_rng(0))
    assert view.spacing is None and view.image.shape == (80, 100) and view.image.dtype == np.uint8
    assert view.region == (slice(None), slice(None))
    segmenter, dataset = Segmenter.load(str(trained_model)), load(tiny_slices)
    _, batches = predicted_batches(segmenter, dataset, "val", 8, "zoom", False, transform=png(0.5))
    _, batch, probs, _ = next(batches)
    assert all(p.shape[1:] == image.shape for p, image in zip(probs, batch["image"], strict=True))
