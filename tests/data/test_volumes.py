import gzip

import nibabel as nib
import numpy as np
import pytest
from conftest import save_nifti, synthetic_ras, write_case, write_dicom_series

from hemseg.data.volumes import PLANES, cut, find_volumes, plane_spacing, read_volume


@pytest.mark.parametrize("codes", [("I", "P", "R"), ("L", "A", "S"), ("A", "S", "L"), ("R", "I", "P")])
def test_axis_order_on_disk_does_not_change_the_slices(tmp_path, codes):
    image, _ = synthetic_ras()
    reference = read_volume(save_nifti(image, tmp_path / "ras.nii.gz", ("R", "A", "S")))
    other = read_volume(save_nifti(image, tmp_path / "other.nii.gz", codes))
    for plane in PLANES:
        assert np.array_equal(cut(reference.image, plane, 20), cut(other.image, plane, 20))


def test_slices_are_shown_superior_and_anterior_up():
    image, _ = synthetic_ras()
    sagittal, coronal, axial = (cut(image, plane, 20) for plane in ("sagittal", "coronal", "axial"))
    assert sagittal[:4].mean() > sagittal[-4:].mean() + 60  # superior band at the top
    assert sagittal[10:60, :4].mean() > sagittal[10:60, -4:].mean() + 30  # anterior band on the left
    assert coronal[:4].mean() > coronal[-4:].mean() + 60
    assert axial[:4].mean() > axial[-4:].mean() + 30  # anterior up


def test_plane_spacing_follows_the_cut():
    spacing = (0.5, 0.8, 3.0)  # x, y, z
    assert plane_spacing(spacing, "sagittal") == (3.0, 0.8)
    assert plane_spacing(spacing, "coronal") == (3.0, 0.5)
    assert plane_spacing(spacing, "axial") == (0.8, 0.5)


def test_spacing_is_read_from_the_header(tmp_path):
    image, _ = synthetic_ras()
    volume = read_volume(save_nifti(image, tmp_path / "v.nii.gz", ("I", "P", "R"), spacing=(0.7, 0.9, 4.0)))
    assert volume.spacing == pytest.approx((0.7, 0.9, 4.0))


def test_dicom_series_reads_like_the_nifti_volume(tmp_path):
    image, _ = synthetic_ras()
    series = write_dicom_series(image, tmp_path / "series")
    volume = read_volume(series)
    assert volume.image.shape == image.shape
    np.testing.assert_allclose(volume.image, image, atol=1.0)  # rescale slope/intercept applied
    assert volume.spacing == pytest.approx((1.0, 1.0, 1.0))
    nifti = read_volume(save_nifti(image, tmp_path / "v.nii.gz"))
    np.testing.assert_allclose(cut(volume.image, "sagittal", 12), cut(nifti.image, "sagittal", 12), atol=1.0)


def test_volume_without_orientation_is_refused(tmp_path):
    image, _ = synthetic_ras()
    nifti = nib.Nifti1Image(image, affine=None)  # saved with qform and sform codes 0
    path = tmp_path / "no_orientation_image.nii.gz"
    nib.save(nifti, path)
    with pytest.raises(ValueError, match="no_orientation_image.nii.gz.*no orientation"):
        read_volume(path)


def test_label_on_another_grid_is_refused(tmp_path):
    image, label = synthetic_ras()
    save_nifti(image, tmp_path / "a_image.nii.gz")
    save_nifti(label[:, :, :-2], tmp_path / "a_label.nii.gz")
    with pytest.raises(ValueError, match="a_label.nii.gz.*differs"):
        read_volume(tmp_path / "a_image.nii.gz", tmp_path / "a_label.nii.gz")


def test_truncated_and_corrupt_files_are_named(tmp_path):
    path = write_case(tmp_path, "t")
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="t_image.nii.gz.*could not be read"):
        read_volume(path)
    junk = tmp_path / "junk_image.nii.gz"
    junk.write_bytes(b"not a volume at all")
    with pytest.raises(ValueError, match="junk_image.nii.gz"):
        read_volume(junk)


def test_corrupt_dicom_file_is_named(tmp_path):
    image, _ = synthetic_ras()
    series = write_dicom_series(image[:, :, :6], tmp_path / "series")
    (series / "broken.dcm").write_bytes(b"DICM garbage")
    with pytest.raises(ValueError, match="broken.dcm"):
        read_volume(series)


def test_find_volumes_pairs_images_labels_and_series(tmp_path, nifti_cases):
    image, _ = synthetic_ras()
    write_dicom_series(image[:, :, :4], tmp_path / "dicom" / "patient7")
    found = find_volumes([nifti_cases, tmp_path / "dicom"])
    assert [case for case, _, _ in found] == ["srca_01", "srcb_01", "patient7"]
    assert found[0][2].name == "srca_01_label.nii.gz" and found[2][2] is None
    with pytest.raises(ValueError, match="no volumes found"):
        (tmp_path / "empty").mkdir()
        find_volumes([tmp_path / "empty"])
