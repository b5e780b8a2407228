import numpy as np
import pytest
from conftest import synthetic_ras
from scipy import ndimage

from hemseg.data.simulate import SimulatorConfig, insert_hemangiomas
from hemseg.data.volumes import cut

ALWAYS_THREE = SimulatorConfig(lesion_count_weights=(0, 0, 0, 1))


def simulate(seed: int, config: SimulatorConfig = ALWAYS_THREE):
    image, label = synthetic_ras()
    return image, label, *insert_hemangiomas(image, label, (1.0, 1.0, 1.0), np.random.default_rng(seed), config)


@pytest.mark.parametrize("seed", range(6))
def test_lesions_lie_inside_vertebral_bodies(seed):
    _, label, _, mask, lesions = simulate(seed)
    assert len(lesions) == 3 and mask.any()
    assert not (mask & (label == 0)).any()
    for lesion in lesions:
        assert label[tuple(lesion.center_voxel)] == lesion.vertebra


def test_same_seed_same_lesions_other_seed_other_lesions():
    _, _, image_a, mask_a, lesions_a = simulate(4)
    _, _, image_b, mask_b, lesions_b = simulate(4)
    _, _, _, mask_c, _ = simulate(5)
    assert np.array_equal(image_a, image_b) and np.array_equal(mask_a, mask_b) and lesions_a == lesions_b
    assert not np.array_equal(mask_a, mask_c)


def test_intensity_multiplies_the_tissue_and_only_near_the_lesion():
    original, _, image, mask, _ = simulate(1)
    changed = ~np.isclose(image, original, atol=0.5)
    assert changed[mask].mean() > 0.5  # the lesion changes the tissue under it
    near = ndimage.binary_dilation(mask, iterations=6)
    assert not changed[~near].any()  # partial-volume blur stays within a few voxels
    assert image.min() >= 0 and image.max() <= 255


def test_typical_lesions_are_brighter_and_none_is_iso_intense():
    config = SimulatorConfig(lesion_count_weights=(0, 1), radius_mm=(5.0, 8.0), typical_share=0.4)
    kinds = set()
    for seed in range(16):
        original, _, image, mask, (lesion,) = simulate(seed, config)
        ratio = image[mask].mean() / original[mask].mean()
        kinds.add((lesion.kind, ratio > 1))
        if lesion.kind == "typical":
            assert ratio > 1.05
        assert abs(ratio - 1) > 0.1, f"seed {seed}: a {lesion.kind} lesion changes its body by {ratio:.2f}x only"
    assert kinds == {("typical", True), ("atypical", True), ("atypical", False)}


def test_one_lesion_is_the_same_in_all_three_planes():
    _, _, image, mask, lesions = simulate(2)
    x, y, z = lesions[0].center_voxel
    nx, ny, nz = mask.shape
    sagittal, coronal, axial = cut(mask, "sagittal", x), cut(mask, "coronal", y), cut(mask, "axial", z)
    assert sagittal.any() and coronal.any() and axial.any()
    # Two planes through the same voxel share a line: the lesion must cover the same pixels along it.
    assert np.array_equal(sagittal[nz - 1 - z, :], axial[:, nx - 1 - x])
    assert np.array_equal(sagittal[:, ny - 1 - y], coronal[:, nx - 1 - x])
    assert np.array_equal(coronal[nz - 1 - z, :], axial[ny - 1 - y, :])
    assert np.array_equal(cut(image, "sagittal", x)[nz - 1 - z, :], cut(image, "axial", z)[:, nx - 1 - x])


def test_volume_without_vertebrae_gets_no_lesion():
    image, label = synthetic_ras()
    out, mask, lesions = insert_hemangiomas(
        image, np.zeros_like(label), (1, 1, 1), np.random.default_rng(0), ALWAYS_THREE
    )
    assert lesions == [] and not mask.any() and np.array_equal(out, image)


def test_lesions_range_from_darker_to_brighter_and_over_every_texture_and_share_bodies():
    lesions = []
    for seed in range(40):
        lesions += simulate(seed, SimulatorConfig(lesion_count_weights=(0, 0, 0, 0, 1)))[4]
    contrasts = [lesion.contrast for lesion in lesions]
    assert min(contrasts) < 0.6 and max(contrasts) > 2.0  # much darker than marrow to much brighter
    assert all(abs(c - 1) > 0.1 for c in contrasts)  # none iso-intense
    assert {lesion.texture for lesion in lesions} == {"trabecular", "spotted", "plain"}
    assert any(lesion.lobes for lesion in lesions)  # lobulated ones, of several ellipsoids
    per_case = [lesions[i : i + 4] for i in range(0, len(lesions), 4)]
    assert any(len({lesion.vertebra for lesion in case}) < 4 for case in per_case)  # several in one body


def test_a_large_lesion_can_fill_its_body():
    config = SimulatorConfig(lesion_count_weights=(0, 1), radius_mm=(25.0, 30.0), irregularity=(0.0, 0.0))
    _, label, _, mask, (lesion,) = simulate(0, config)
    body = label == lesion.vertebra
    assert mask[body].mean() > 0.9 and not (mask & ~body).any()
