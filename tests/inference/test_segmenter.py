import json
import shutil

import numpy as np
import pytest
import torch
from conftest import EXAMPLE, dicom_slice, run
from PIL import Image

from hemseg import Segmenter, UNet
from hemseg.inference.scale import estimate_pixel_size
from hemseg.inference.segmenter import Prediction, cut, parse_model_spec
from hemseg.preprocessing import DEFAULT_PREPROCESSING, SPACING_FIT, from_model_grid, preprocess


def test_prediction_has_the_input_size_and_its_numbers(trained_model, tmp_path):
    segmenter = Segmenter.load(trained_model)
    image = np.random.default_rng(0).integers(0, 4000, (100, 61)).astype(np.uint16)
    Image.fromarray(image).save(tmp_path / "slice16.png")
    prediction = segmenter.predict(tmp_path / "slice16.png")
    assert set(prediction.masks) == {"vertebral_body", "hemangioma"}
    for label, mask in prediction.masks.items():
        assert mask.shape == (100, 61) and mask.dtype == bool
        assert prediction.probabilities[label].shape == (100, 61)
        assert prediction.area(label) == mask.sum() and prediction.area_unit == "px"
    lower = prediction.with_threshold(0.0)
    assert lower.masks["hemangioma"].all() and lower.probabilities is prediction.probabilities


def test_skipping_the_grid_padding_changes_almost_nothing(trained_model):
    segmenter = Segmenter.load(trained_model)  # a square-grid model, on a long real slice: wide padding bands
    image = np.asarray(Image.open(EXAMPLE))
    x = preprocess(image, segmenter.model.preprocessing)
    _, cols = segmenter.window(image.shape, tuple(x.shape[-2:]))
    assert (cols.stop - cols.start) < x.shape[-1] / 1.5  # the window is much narrower than the square grid
    with torch.inference_mode():
        whole = from_model_grid(torch.sigmoid(segmenter.forward(x)).cpu(), image.shape)[0].numpy()
    windowed = segmenter.predict(image)
    for c, label in enumerate(segmenter.labels):
        assert np.abs(windowed.probabilities[label] - whole[c]).mean() < 0.01
        agree = windowed.masks[label] == (whole[c] > segmenter.model.threshold)
        assert agree.mean() > 0.995, label


def test_a_slice_gets_the_same_result_whatever_it_is_batched_with(trained_model):
    segmenter = Segmenter.load(trained_model)
    rng = np.random.default_rng(3)
    tall, wide, square = rng.random((120, 40)), rng.random((50, 130)), rng.random((64, 64))
    alone = segmenter.probabilities([tall])[0]
    mixed = segmenter.probabilities([square, tall, wide, tall])
    assert [p.shape[1:] for p in mixed] == [(64, 64), (120, 40), (50, 130), (120, 40)]
    np.testing.assert_allclose(mixed[1], alone, atol=1e-6)
    np.testing.assert_allclose(mixed[3], alone, atol=1e-6)


def test_dicom_spacing_gives_areas_in_mm2(trained_model, tmp_path):
    pixels = np.random.default_rng(1).integers(0, 1000, (64, 48))
    prediction = Segmenter.load(trained_model).predict(dicom_slice(tmp_path / "s.dcm", pixels))
    assert prediction.area_unit == "mm2"
    assert prediction.area("vertebral_body") == pytest.approx(prediction.masks["vertebral_body"].sum() * 0.4)


def test_test_time_augmentation_keeps_shapes(trained_model):
    image = np.random.default_rng(2).random((70, 90)).astype(np.float32)
    segmenter = Segmenter.load(trained_model)
    plain, mirrored = segmenter.predict(image), segmenter.predict(image, tta=True)
    assert mirrored.probabilities["hemangioma"].shape == (70, 90)
    assert not np.allclose(plain.probabilities["hemangioma"], mirrored.probabilities["hemangioma"])


def test_model_spec_parsing(tmp_path):
    assert parse_model_spec("user/model@v1.2") == ("user/model", "v1.2")
    assert parse_model_spec("user/model") == ("user/model", None)
    odd = tmp_path / "with@sign"
    odd.mkdir()
    assert parse_model_spec(str(odd)) == (str(odd), None)


def test_hemseg_model_variable_and_hub_cache(trained_model, tmp_path):
    # A Hub model already in huggingface_hub's cache loads offline, by id and by id@revision.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-hemseg"
    shutil.copytree(trained_model, repo / "snapshots" / commit, ignore=shutil.ignore_patterns("evaluation"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = "from hemseg import Segmenter; s = Segmenter.load(); print(s.source, s.labels)"
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    for spec in ("someone/tiny-hemseg", f"someone/tiny-hemseg@{commit}"):
        result = run(["-c", code], env={**env, "HEMSEG_MODEL": spec})
        assert result.stdout.startswith(spec) and "hemangioma" in result.stdout


def test_unreachable_model_falls_back_to_the_bundled_one():
    result = run(
        ["-c", "from hemseg import Segmenter; print(Segmenter.load().source)"],
        env={"HEMSEG_MODEL": "nobody/not-cached", "HF_HUB_OFFLINE": "1"},
    )
    assert result.stdout.strip().endswith("bundled") and "could not be loaded" in result.stderr


def test_explicit_model_that_cannot_load_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="could not load the model"):
        Segmenter.load("nobody/not-cached")
    with pytest.raises(FileNotFoundError):
        Segmenter.load(str(tmp_path / "missing-folder"))


def two_components() -> np.ndarray:
    """A confident component (peak 0.97, with a pixel joined only diagonally) and a faint one (peak 0.7)."""
    p = np.zeros((8, 8), dtype=np.float32)
    p[1:3, 1:3] = [[0.97, 0.8], [0.6, 0.55]]
    p[3, 3] = 0.6  # touches the first component at a corner only
    p[6, 5:7] = [0.7, 0.52]
    p[5, 0] = 0.4  # below the threshold: never in the mask
    return p


def test_cut_keeps_whole_components_that_reach_the_seed():
    p = two_components()
    plain = cut(p, 0.5)
    assert plain.sum() == 7 and not plain[5, 0]
    seeded = cut(p, 0.5, seed=0.9)
    assert seeded.sum() == 5 and seeded[3, 3]  # the diagonal pixel belongs to the confident lesion (8-connected)
    assert not seeded[6, 5:7].any()  # the faint lesion is dropped, all of it
    assert cut(p, 0.5, seed=0.7).sum() == 7  # the seed is inclusive, like the threshold
    assert cut(p, 0.5, seed=0.98).sum() == 0
    assert np.array_equal(cut(p, 0.5, seed=0.3), plain)  # a seed at or below the threshold changes nothing
    assert not cut(np.zeros((4, 4)), 0.5, seed=0.9).any()


def test_prediction_applies_the_seed_of_each_label_and_keeps_it_for_other_thresholds():
    p = two_components()
    prediction = Prediction({"vertebral_body": p, "hemangioma": p}, 0.5, seeds={"hemangioma": 0.9})
    assert prediction.masks["vertebral_body"].sum() == 7 and prediction.masks["hemangioma"].sum() == 5
    assert prediction.count("vertebral_body") == 2 and prediction.count("hemangioma") == 1
    lower = prediction.with_threshold(0.45)
    assert lower.seeds == {"hemangioma": 0.9} and lower.masks["hemangioma"].sum() == 5


def test_seed_thresholds_travel_in_the_config(tmp_path):
    model = UNet(1, 2, 4, labels=["vertebral_body", "hemangioma"], seed_thresholds={"hemangioma": 0.99})
    model.save_pretrained(tmp_path)
    assert UNet.from_pretrained(tmp_path).seed_thresholds == {"hemangioma": 0.99}
    config = json.loads((tmp_path / "config.json").read_text())
    del config["seed_thresholds"]  # as configs were written before seeds existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert UNet.from_pretrained(tmp_path).seed_thresholds == {}
    with pytest.raises(ValueError, match="not among the labels"):
        UNet(1, 1, 4, seed_thresholds={"vertebral_body": 0.9})
    with pytest.raises(ValueError, match="at most 1"):
        UNet(1, 1, 4, seed_thresholds={"hemangioma": 1.5})


def physical_model(tile: int = 512) -> UNet:
    torch.manual_seed(0)
    contract = {**DEFAULT_PREPROCESSING, **SPACING_FIT, "spacing_mm": 1.25, "tile": tile}
    return UNet(1, 2, 8, labels=["vertebral_body", "hemangioma"], preprocessing=contract)


def test_a_physical_model_answers_at_the_input_size_and_says_which_pixel_size_it_used():
    segmenter = Segmenter(physical_model(), "physical")
    image = np.asarray(Image.open(EXAMPLE))
    given = segmenter.predict(image, spacing=(0.8, 0.8))
    assert given.spacing == (0.8, 0.8) and given.spacing_source == "given"
    assert given.probabilities["vertebral_body"].shape == image.shape
    assert given.area("vertebral_body") == pytest.approx(given.masks["vertebral_body"].sum() * 0.64)
    estimated = segmenter.predict(image)
    assert estimated.spacing_source == "estimated" and estimated.spacing[0] == estimated.spacing[1] > 0
    # The pixel size changes what the network sees: a slice taken at twice the pixel size is another input.
    assert not np.allclose(
        given.probabilities["vertebral_body"], segmenter.predict(image, (1.6, 1.6)).probabilities["vertebral_body"]
    )


def test_a_physical_model_runs_a_large_slice_in_tiles_that_agree_with_the_whole():
    # A long spine: the example slice three times over, 780 rows at 1 mm, 624 at the model's 1.25 mm.
    image = np.tile(np.asarray(Image.open(EXAMPLE)), (3, 1))
    whole, tiled = Segmenter.load(), Segmenter.load()  # the bundled model: its answers are far from uniform
    whole.model.preprocessing["tile"], tiled.model.preprocessing["tile"] = 1024, 256
    a, b = whole.predict(image, (1.0, 1.0)), tiled.predict(image, (1.0, 1.0))
    bodies = a.masks["vertebral_body"]
    assert bodies.mean() > 0.1 and bodies[:260].any() and bodies[-260:].any()  # bodies in every third
    for label in a.probabilities:
        assert b.probabilities[label].shape == image.shape
        assert np.abs(a.probabilities[label] - b.probabilities[label]).mean() < 0.005
        assert (a.masks[label] == b.masks[label]).mean() > 0.995
    shifted = np.roll(b.probabilities["vertebral_body"], 40, axis=0)  # what a misplaced tile would give
    assert np.abs(a.probabilities["vertebral_body"] - shifted).mean() > 0.02


def test_the_bundled_model_estimates_a_pixel_size_near_the_true_one_at_any_zoom():
    segmenter = Segmenter.load()  # the physical bundled model, on a real 1 mm slice without its pixel size
    image = np.asarray(Image.open(EXAMPLE))
    estimate = estimate_pixel_size(segmenter, image)
    assert 0.7 < estimate < 1.4
    twice = np.asarray(Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.BILINEAR))
    assert estimate_pixel_size(segmenter, twice) == pytest.approx(estimate / 2, rel=0.25)  # half the pixel size
