import numpy as np
import pytest
import torch

from hemseg.preprocessing import (
    DEFAULT_PREPROCESSING,
    SPACING_FIT,
    content_box,
    from_model_grid,
    normalize_intensity,
    pad_to_multiple,
    preprocess,
    to_model_grid,
    to_spacing,
)


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


PHYSICAL = {**DEFAULT_PREPROCESSING, **SPACING_FIT, "spacing_mm": 1.25}


def test_the_physical_contract_puts_a_slice_at_the_model_pixel_size_whatever_its_own():
    image = np.zeros((200, 100), np.uint8)
    image[50:150, 25:75] = 200  # a 100 x 50 mm body at 1 mm pixels
    at_1mm = preprocess(image, PHYSICAL, (1.0, 1.0))
    assert at_1mm.shape == (1, 1, 160, 80)  # 200 x 100 mm at 1.25 mm pixels
    # The same anatomy as a coarser matrix (2 x 0.5 mm pixels) lands on the same pixels.
    other = np.repeat(image[::2], 1, axis=0).repeat(2, axis=1)
    at_other = preprocess(other, PHYSICAL, (2.0, 0.5))
    assert at_other.shape == at_1mm.shape
    assert ((at_other > 0.5) == (at_1mm > 0.5)).float().mean() > 0.98
    with pytest.raises(ValueError, match="give the image's pixel size"):
        preprocess(image, PHYSICAL)


def test_padding_to_a_multiple_centres_the_slice_and_says_where():
    x = torch.ones(1, 1, 37, 64)
    padded, (rows, cols) = pad_to_multiple(x, 16)
    assert padded.shape == (1, 1, 48, 64) and (rows, cols) == (slice(5, 42), slice(0, 64))
    assert padded[..., rows, cols].equal(x) and padded.sum() == x.sum()
    masks = torch.zeros(1, 1, 10, 10)
    masks[..., 2:4, 2:4] = 1
    assert set(to_spacing(masks, (1.0, 1.0), 0.5, mode="nearest").unique().tolist()) == {0.0, 1.0}
