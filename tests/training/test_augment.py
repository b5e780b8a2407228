import torch
import torch.nn.functional as F

from hemseg.training.augment import (
    NO_AUGMENT,
    AugmentConfig,
    augment,
    cut_field_of_view,
    random_blur,
    random_curves,
    random_tissues,
    tissue_classes,
)


def batch(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=g)
    masks = torch.zeros(n, 2, size, size)
    masks[:, 0, 4:20, 6:14] = 1
    masks[:, 1, 10:12, 20:30] = 1
    return images, masks


def test_identity_settings_change_nothing():
    images, masks = batch()
    out_images, out_masks, _ = augment(images, masks, torch.Generator().manual_seed(1), NO_AUGMENT)
    assert torch.allclose(out_images, images, atol=1e-5) and torch.equal(out_masks, masks)


def test_flips_move_image_and_masks_together():
    images, masks = batch()
    flip = AugmentConfig(**{**NO_AUGMENT.__dict__, "hflip": 1.0})
    out_images, out_masks, _ = augment(images, masks, torch.Generator().manual_seed(1), flip)
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
    out_images, out_masks, _ = augment(images, masks, torch.Generator().manual_seed(2), geometric_only)
    agreement = ((out_images > 0.5) == out_masks[:, :1].bool()).float().mean()
    assert agreement > 0.98 and not torch.equal(out_masks, masks)


def test_crop_windows_follow_the_foreground_and_keep_image_and_mask_aligned():
    images = torch.zeros(16, 1, 128, 128)
    images[:, :, 90:110, 10:30] = 1  # one small object far from the centre
    masks = images.clone().repeat(1, 2, 1, 1)
    out_images, out_masks, _ = augment(images, masks, torch.Generator().manual_seed(3), crop=48)
    assert out_images.shape == (16, 1, 48, 48) and out_masks.shape == (16, 2, 48, 48)
    assert (out_masks.flatten(1).amax(1) > 0).all()  # every window holds part of the object
    assert ((out_images > 0.5) == out_masks[:, :1].bool()).float().mean() > 0.97
    # Without scaling or rotation a window copies pixels: the whole 20 x 20 object, or a cut of it, never resized.
    plain_images, plain, _ = augment(images, masks, torch.Generator().manual_seed(3), NO_AUGMENT, crop=48)
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
    out_images, out_masks, _ = augment(images, masks, torch.Generator().manual_seed(4), blur)
    assert torch.equal(out_masks, masks)
    assert out_images.std() < 0.8 * images.std()  # noise pixels averaged with their neighbours


def two_tissue_image(n: int = 6) -> torch.Tensor:
    """Black background, a dark tissue (0.3) and a bright one (0.8) with a little texture."""
    images = torch.zeros(n, 1, 48, 48)
    images[:, :, 8:40, 8:24] = 0.3
    images[:, :, 8:40, 24:40] = 0.8
    return images + 0.02 * torch.sin(torch.arange(48.0))[None, None, None, :] * (images > 0)


def test_random_tissues_give_each_class_a_new_level_and_keep_its_texture_and_the_dark():
    images = two_tissue_image()
    out = random_tissues(images, 1.0, (3, 3), torch.Generator().manual_seed(0), None)
    background, dark, bright = out[:, 0, 44:, :], out[:, 0, 10:38, 10:22], out[:, 0, 10:38, 26:38]
    assert (background.amax((-2, -1)) <= 0.15).all()  # the darkest class stays dark
    swapped = (dark.mean((-2, -1)) > bright.mean((-2, -1))).sum()
    assert 0 < swapped < len(images) or len(images) == 1  # tissues change rank in some images, not all
    # Each class is one level plus its own texture, scaled: the columns' pattern survives within a class.
    texture = bright - bright.mean(-1, keepdim=True)
    original = images[:, 0, 10:38, 26:38] - images[:, 0, 10:38, 26:38].mean(-1, keepdim=True)
    assert torch.corrcoef(torch.stack([texture.flatten(), original.flatten()]))[0, 1] > 0.9
    assert torch.equal(random_tissues(images, 0.0, (3, 7), torch.Generator().manual_seed(0), None), images)
    # Only the inside of the image sets the classes: wide padding outside it would otherwise take classes away.
    padded = F.pad(images, [96] * 4)  # 97 % of the pixels black
    inside = torch.zeros_like(padded)
    inside[..., 96 + 8 : 96 + 40, 96 + 8 : 96 + 40] = 1  # the two tissues, half each
    dark, bright = (96 + 20, 96 + 14), (96 + 20, 96 + 30)
    with_inside, without = tissue_classes(padded, 2, inside), tissue_classes(padded, 2)
    assert (with_inside[:, dark[0], dark[1]] < with_inside[:, bright[0], bright[1]]).all()  # two tissues, two classes
    assert (without[:, dark[0], dark[1]] == without[:, bright[0], bright[1]]).all()  # both above the black median


def test_a_cut_field_of_view_keeps_the_centre_blanks_and_ignores_the_rest_and_rescales_the_inside():
    images = two_tissue_image(32) * 0.5  # a dim slice: its own percentiles will stretch it
    masks = (images > 0.3).float().repeat(1, 2, 1, 1)
    weights = torch.ones_like(masks)
    out, out_masks, out_weights = cut_field_of_view(images, masks, weights, 1.0, 16, torch.Generator().manual_seed(1))
    kept = out_weights[:, 0] > 0
    assert kept[:, 24, 24].all()  # every box holds the window's centre
    sides = kept.any(-1).sum(-1), kept.any(-2).sum(-1)
    assert all(((side >= 16) & (side <= 48)).all() for side in sides) and (sides[0] < 48).any()
    assert (out[:, 0][~kept] == 0).all() and (out_masks[:, 0][~kept] == 0).all()
    assert (out[:, 0][kept].reshape(-1) <= 1).all() and out.amax() == 1.0  # rescaled by the box's own percentiles
    same, _, _ = cut_field_of_view(images, masks, weights, 0.0, 16, torch.Generator().manual_seed(1))
    assert torch.equal(same, images)


def test_augment_warps_the_weights_with_the_masks_and_what_comes_in_from_outside_is_ignored():
    images = two_tissue_image(8)
    masks = (images > 0.5).float().repeat(1, 2, 1, 1)
    weights = torch.ones_like(masks)
    weights[:, 1, :24] = 0  # the second label is not scored in the upper half
    config = AugmentConfig(**{**NO_AUGMENT.__dict__, "rotation_deg": 40, "fov_p": 0.5})
    _, out_masks, out_weights = augment(images, masks, torch.Generator().manual_seed(0), config, None, weights)
    assert set(out_weights.unique().tolist()) <= {0.0, 1.0}
    assert (out_weights[:, 0] == 0).any()  # the corners the rotation brings in
    assert out_weights[:, 1].sum() < out_weights[:, 0].sum()
    assert not out_masks[:, 0][out_weights[:, 0] == 0].any()  # nothing to find where nothing is scored
