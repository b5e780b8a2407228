import numpy as np
import pytest
import torch

from hemseg.preprocessing import content_box, from_model_grid, normalize_intensity, preprocess, to_model_grid


def test_preprocess_gives_the_model_input():
    image = np.random.default_rng(0).integers(0, 4000, (300, 120)).astype(np.uint16)
    x = preprocess(image)
    assert x.shape == (1, 1, 128, 128) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert x[..., :, :10].abs().max() == 0  # padding to a square keeps the aspect ratio: empty side bands
    assert preprocess(image, {"size": [64, 64]}).shape == (1, 1, 64, 64)


def test_preprocess_ignores_the_intensity_unit():
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    assert torch.allclose(preprocess(image), preprocess(image * 3000 + 100), atol=1e-5)


def test_normalize_intensity_maps_percentiles_to_0_and_1():
    image = np.arange(1000, dtype=np.float32).reshape(25, 40)  # percentiles 0.5/99.5 by linear interpolation
    lo, hi = 0.005 * 999, 0.995 * 999
    out = normalize_intensity(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert out.flat[0] == 0 and out.flat[-1] == 1  # clipped beyond the percentiles
    assert out.flat[500] == pytest.approx((500 - lo) / (hi - lo), abs=1e-6)
    assert not normalize_intensity(np.full((4, 4), 7.0)).any()  # a constant image: all zeros


@pytest.mark.parametrize("bad", [np.full((8, 8), np.nan), np.zeros((3, 8, 8))])
def test_preprocess_refuses_nan_and_non_2d(bad):
    with pytest.raises(ValueError, match="NaN|2D"):
        preprocess(bad)


def test_preprocess_takes_pixels_outside_the_field_of_view_as_background():
    image = np.random.default_rng(0).uniform(10, 100, (32, 24)).astype(np.float32)
    image[:4] = image[4:].min()  # the lowest value: background
    with_nan = image.copy()
    with_nan[:2] = np.nan
    with_nan[2:4] = -np.inf
    assert torch.equal(preprocess(with_nan), preprocess(image))


def test_model_grid_round_trip_keeps_size_and_place():
    probs = torch.zeros(1, 1, 90, 40)
    probs[..., 30:60, 10:30] = 1
    back = from_model_grid(to_model_grid(probs, (128, 128)), (90, 40))
    assert back.shape == (1, 1, 90, 40)
    assert ((back > 0.5) == (probs > 0.5)).float().mean() > 0.97


@pytest.mark.parametrize("shape", [(245, 77), (143, 77), (245, 143), (100, 100), (31, 200)])
def test_content_box_covers_the_image_and_skips_padding(shape):
    grid = to_model_grid(torch.ones(1, 1, *shape), (192, 192))[0, 0] > 0
    rows, cols = content_box(shape, (192, 192), 16)
    assert (rows.stop - rows.start) % 16 == 0 and (cols.stop - cols.start) % 16 == 0
    assert rows.start >= 0 and cols.start >= 0 and rows.stop <= 192 and cols.stop <= 192
    inside = torch.zeros_like(grid)
    inside[rows, cols] = True
    assert not (grid & ~inside).any()  # every image pixel is inside the box
    assert inside.sum() <= grid.sum() + 2 * 16 * 192 + 4 * 192  # and little else
