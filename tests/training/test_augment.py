import torch

from hemseg.training.augment import NO_AUGMENT, AugmentConfig, augment, random_blur, random_curves


def batch(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=g)
    masks = torch.zeros(n, 2, size, size)
    masks[:, 0, 4:20, 6:14] = 1
    masks[:, 1, 10:12, 20:30] = 1
    return images, masks


def test_identity_settings_change_nothing():
    images, masks = batch()
    out_images, out_masks = augment(images, masks, torch.Generator().manual_seed(1), NO_AUGMENT)
    assert torch.allclose(out_images, images, atol=1e-5) and torch.equal(out_masks, masks)


def test_flips_move_image_and_masks_together():
    images, masks = batch()
    flip = AugmentConfig(**{**NO_AUGMENT.__dict__, "hflip": 1.0})
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
    geometric_only = AugmentConfig(**{**NO_AUGMENT.__dict__, "rotation_deg": 30, "scale": (0.8, 1.2), "elastic_p": 1.0})
    out_images, out_masks = augment(images, masks, torch.Generator().manual_seed(2), geometric_only)
    agreement = ((out_images > 0.5) == out_masks[:, :1].bool()).float().mean()
    assert agreement > 0.98 and not torch.equal(out_masks, masks)


def test_crop_windows_follow_the_foreground_and_keep_image_and_mask_aligned():
    images = torch.zeros(16, 1, 128, 128)
    images[:, :, 90:110, 10:30] = 1  # one small object far from the centre
    masks = images.clone().repeat(1, 2, 1, 1)
    out_images, out_masks = augment(images, masks, torch.Generator().manual_seed(3), crop=48)
    assert out_images.shape == (16, 1, 48, 48) and out_masks.shape == (16, 2, 48, 48)
    assert (out_masks.flatten(1).amax(1) > 0).all()  # every window holds part of the object
    assert ((out_images > 0.5) == out_masks[:, :1].bool()).float().mean() > 0.97
    # Without scaling or rotation a window copies pixels: the whole 20 x 20 object, or a cut of it, never resized.
    plain_images, plain = augment(images, masks, torch.Generator().manual_seed(3), NO_AUGMENT, crop=48)
    assert plain.sum((-2, -1)).max() == 400 and plain.sum((-2, -1)).min() > 0
    assert set(plain_images.unique().tolist()) == {0.0, 1.0}  # no interpolated values
    empty = augment(images, torch.zeros_like(masks), torch.Generator().manual_seed(3), crop=48)
    assert empty[0].shape == (16, 1, 48, 48) and not empty[1].any()


def test_random_curves_are_piecewise_linear_keep_black_and_can_swap_tissues():
    ramp = torch.linspace(0, 1, 401).repeat(64, 1, 1, 1)  # 64 images, each one row from 0 to 1
    curved = random_curves(ramp, 1.0, 5, torch.Generator().manual_seed(0))
    assert torch.all(curved[..., 0] == 0) and torch.allclose(curved.amax(-1), torch.ones(64, 1, 1))
    # Straight between the control points at 0, 0.25, 0.5, 0.75 and 1 (every 100th pixel of the ramp).
    knots = curved[..., ::100]
    between = (knots[..., :-1] + knots[..., 1:]) / 2
    assert torch.allclose(curved[..., 50::100], between, atol=1e-5)
    assert (curved.diff(dim=-1) < 0).any(-1).float().mean() > 0.5  # most curves fall somewhere: ranks swap
    # With p 0 nothing changes and nothing is drawn, so earlier augmentations replay exactly.
    generator = torch.Generator().manual_seed(0)
    assert random_curves(ramp, 0.0, 5, generator) is ramp and generator.get_state().equal(
        torch.Generator().manual_seed(0).get_state()
    )
    some = random_curves(ramp, 0.5, 5, torch.Generator().manual_seed(1))
    changed = (some != ramp).flatten(1).any(1).float().mean()
    assert 0.25 < changed < 0.75


def test_random_blur_spreads_a_point_by_its_own_sd_along_each_axis():
    point = torch.zeros(64, 1, 25, 25)
    point[..., 12, 12] = 1
    blurred = random_blur(point, 1.0, 2.0, torch.Generator().manual_seed(0))
    assert torch.allclose(blurred.sum((-2, -1)), torch.ones(64, 1))  # intensity is moved, not lost
    offsets = torch.arange(25.0) - 12
    variance_down = (blurred.sum(-1) * offsets**2).sum(-1).flatten()  # the sd^2 drawn for the rows
    variance_across = (blurred.sum(-2) * offsets**2).sum(-1).flatten()
    assert variance_down.max() <= 4.0 + 1e-4 and variance_across.max() <= 4.0 + 1e-4
    assert variance_down.max() > 2.5 and variance_across.max() > 2.5
    assert ((variance_down - variance_across).abs() > 1).float().mean() > 0.3  # often one axis far more: thick slices
    assert random_blur(point.bfloat16(), 1.0, 2.0, torch.Generator().manual_seed(0)).dtype == torch.bfloat16
    # Edges are extended, so a flat image stays flat.
    flat = torch.full((4, 1, 16, 16), 0.3)
    assert torch.allclose(random_blur(flat, 1.0, 2.0, torch.Generator().manual_seed(1)), flat)


def test_random_blur_leaves_unchosen_images_exact_and_draws_nothing_at_p_0():
    images, _ = batch(n=32)
    some = random_blur(images, 0.5, 2.0, torch.Generator().manual_seed(2))
    unchanged = (some == images).flatten(1).all(1).float().mean()
    assert 0.25 < unchanged < 0.75
    generator = torch.Generator().manual_seed(0)
    assert random_blur(images, 0.0, 2.0, generator) is images
    assert generator.get_state().equal(torch.Generator().manual_seed(0).get_state())


def test_augment_blurs_the_image_and_keeps_the_truth_sharp():
    images, masks = batch(n=8)
    blur = AugmentConfig(**{**NO_AUGMENT.__dict__, "blur_p": 1.0})
    out_images, out_masks = augment(images, masks, torch.Generator().manual_seed(4), blur)
    assert torch.equal(out_masks, masks)
    assert out_images.std() < 0.8 * images.std()  # noise pixels averaged with their neighbours
