import numpy as np
import pytest
import torch

from hemseg.transforms import AugmentConfig, augment, from_model_grid, preprocess, to_model_grid

IDENTITY = AugmentConfig(
    rotation_deg=0,
    scale=(1, 1),
    hflip=0,
    vflip=0,
    elastic_p=0,
    contrast=(1, 1),
    brightness=(0, 0),
    gamma=(1, 1),
    bias_field=0,
    noise_std=(0, 0),
)


def batch(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=g)
    masks = torch.zeros(n, 2, size, size)
    masks[:, 0, 4:20, 6:14] = 1
    masks[:, 1, 10:12, 20:30] = 1
    return images, masks


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


@pytest.mark.parametrize("bad", [np.full((8, 8), np.nan), np.zeros((3, 8, 8))])
def test_preprocess_refuses_nan_and_non_2d(bad):
    with pytest.raises(ValueError, match="NaN|2D"):
        preprocess(bad)


def test_model_grid_round_trip_keeps_size_and_place():
    probs = torch.zeros(1, 1, 90, 40)
    probs[..., 30:60, 10:30] = 1
    back = from_model_grid(to_model_grid(probs, (128, 128)), (90, 40))
    assert back.shape == (1, 1, 90, 40)
    assert ((back > 0.5) == (probs > 0.5)).float().mean() > 0.97


def test_identity_settings_change_nothing():
    images, masks = batch()
    out_images, out_masks = augment(images, masks, torch.Generator().manual_seed(1), IDENTITY)
    assert torch.allclose(out_images, images, atol=1e-5) and torch.equal(out_masks, masks)


def test_flips_move_image_and_masks_together():
    images, masks = batch()
    flip = AugmentConfig(**{**IDENTITY.__dict__, "hflip": 1.0})
    out_images, out_masks = augment(images, masks, torch.Generator().manual_seed(1), flip)
    assert torch.allclose(out_images, images.flip(-1), atol=1e-5)
    assert torch.equal(out_masks, masks.flip(-1))


def test_augment_is_deterministic_under_a_seed_and_keeps_masks_binary():
    images, masks = batch()
    a = augment(images, masks, torch.Generator().manual_seed(5))
    b = augment(images, masks, torch.Generator().manual_seed(5))
    c = augment(images, masks, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert set(a[1].unique().tolist()) <= {0.0, 1.0}
    assert a[0].min() >= 0 and a[0].max() <= 1 and a[0].shape == images.shape


def test_geometric_warp_is_shared_by_image_and_mask():
    images = torch.zeros(8, 1, 64, 64)
    images[:, :, 20:40, 24:44] = 1
    masks = images.clone().repeat(1, 2, 1, 1)
    geometric_only = AugmentConfig(**{**IDENTITY.__dict__, "rotation_deg": 30, "scale": (0.8, 1.2), "elastic_p": 1.0})
    out_images, out_masks = augment(images, masks, torch.Generator().manual_seed(2), geometric_only)
    agreement = ((out_images > 0.5) == out_masks[:, :1].bool()).float().mean()
    assert agreement > 0.98 and not torch.equal(out_masks, masks)
