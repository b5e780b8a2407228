"""Sizes refused from the header, before decoding; files whose headers say what cannot be; files read as a
viewer shows them. Each builds the file that broke an earlier version."""

import numpy as np
import pytest
from conftest import EXAMPLE
from PIL import Image

from hemseg.data.images import read_slice
from hemseg.data.limits import MAX_PIXELS
from hemseg.data.volumes import MAX_STEM_BYTES, cut, file_stem, read_volume
from hemseg.lab.hostile import _rotated_jpeg, deflated_dicom, dicom_slice, nifti_of_zeros

GOOD = np.asarray(Image.open(EXAMPLE).convert("L"))


def test_a_png_above_the_cap_is_refused_from_its_header(tmp_path):
    Image.new("L", (8192, 8192)).save(tmp_path / "bomb.png")  # 65 KB on disk, 64 MB decoded
    with pytest.raises(ValueError, match="too large"):
        read_slice(tmp_path / "bomb.png")
    Image.new("L", (2049, 2048)).save(tmp_path / "over.png")
    with pytest.raises(ValueError, match=r"2049 x 2048 pixels is too large for hemseg \(at most 4,194,304"):
        read_slice(tmp_path / "over.png")
    Image.new("L", (2048, 2048)).save(tmp_path / "cap.png")
    assert read_slice(tmp_path / "cap.png").pixels.size == MAX_PIXELS


def test_a_deflated_dicom_that_unpacks_past_the_cap_is_refused_unread(tmp_path):
    path = deflated_dicom(tmp_path / "bomb.dcm", 5000, 5000)  # 50 MB unpacked, 50 KB on disk
    with pytest.raises(ValueError, match="the deflated DICOM unpacks to more than 33 MB"):
        read_slice(path)


def test_a_dicom_header_above_the_cap_is_refused_before_its_pixels(tmp_path):
    path = dicom_slice(tmp_path / "liar.dcm", GOOD, Rows=30_000, Columns=30_000)
    with pytest.raises(ValueError, match="30000 x 30000 pixels is too large"):
        read_slice(path)


@pytest.mark.parametrize(("dim", "message"), [((4, -5, 6), "each must be at least 1"), ((4, 0, 6), "at least 1")])
def test_a_nifti_header_with_a_dimension_below_one_is_refused(tmp_path, dim, message):
    path = nifti_of_zeros(tmp_path / "bad.nii", (4, 5, 6), dim=dim)
    for read in (read_slice, read_volume):
        with pytest.raises(ValueError, match=message):
            read(path)


def test_a_nifti_bomb_is_refused_from_its_header(tmp_path):
    path = nifti_of_zeros(tmp_path / "bomb.nii.gz", (3000, 3000))  # 9 MB of zeros: above the 2D cap
    with pytest.raises(ValueError, match="3000 x 3000 voxels is too large"):
        read_slice(path)


def test_words_in_numeric_dicom_fields_are_named_with_the_file(tmp_path):
    path = dicom_slice(tmp_path / "spacing.dcm", GOOD, PixelSpacing=("LO", "wide\\tall"))
    with pytest.raises(ValueError, match=r"spacing.dcm: the DICOM field PixelSpacing holds .*wide.*not a number"):
        read_slice(path)
    path = dicom_slice(tmp_path / "window.dcm", GOOD, WindowCenter="100", WindowWidth=("LO", "wide"))
    with pytest.raises(ValueError, match="window.dcm: the DICOM field WindowWidth holds 'wide'"):
        read_slice(path)


def test_several_images_in_one_file_are_refused_not_cut_to_the_first(tmp_path):
    frames = [Image.fromarray(GOOD), Image.fromarray(255 - GOOD)]
    for name in ("pages.tif", "animation.gif"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        with pytest.raises(ValueError, match="holds 2 images"):
            read_slice(tmp_path / name)
    both = np.concatenate([GOOD, GOOD])
    path = dicom_slice(tmp_path / "frames.dcm", both, NumberOfFrames=2, Rows=GOOD.shape[0])
    with pytest.raises(ValueError, match=r"a multi-frame DICOM \(2 frames\)"):
        read_slice(path)


def test_an_exif_rotated_jpeg_is_read_the_way_viewers_show_it(tmp_path):
    path = _rotated_jpeg(tmp_path / "phone.jpg", GOOD)
    assert Image.open(path).size == (GOOD.shape[0], GOOD.shape[1])  # stored sideways
    pixels = read_slice(path).pixels
    assert pixels.shape == GOOD.shape
    assert np.abs(pixels.astype(int) - GOOD).mean() < 3  # JPEG's loss only


def test_long_names_are_cut_to_a_stem_that_stays_unique(tmp_path):
    a, b = tmp_path / ("n" * 240 + "a.png"), tmp_path / ("n" * 240 + "b.png")
    stems = file_stem(a), file_stem(b)
    assert all(len(stem.encode()) <= MAX_STEM_BYTES for stem in stems) and stems[0] != stems[1]
    assert file_stem(tmp_path / "vb2_07.nii.gz") == "vb2_07"


def test_a_volume_is_held_in_c_order_and_slices_are_views(tmp_path):
    # nibabel's arrays are Fortran-ordered: np.take copied the whole volume for every slice.
    import nibabel as nib

    volume = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    nib.save(nib.Nifti1Image(np.asfortranarray(volume), np.eye(4)), tmp_path / "v.nii.gz")
    image = read_volume(tmp_path / "v.nii.gz").image
    assert image.flags.c_contiguous
    for plane in ("axial", "coronal", "sagittal"):
        assert np.shares_memory(cut(image, plane, 2), image)
    assert np.array_equal(cut(image, "axial", 2), image[:, :, 2].T[::-1, ::-1])
