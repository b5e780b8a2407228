import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import dicom_slice
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless

from hemseg.data.images import frame_count, read_frames, read_slice


def test_a_colour_dicom_is_read_as_grey_like_a_colour_png(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    path = dicom_slice(tmp_path / "colour.dcm", rgb[..., 0])
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    ds.save_as(path)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    grey = read_slice(path).pixels
    assert grey.shape == (30, 20)
    assert np.abs(grey - read_slice(tmp_path / "colour.png").pixels.astype(np.float32)).max() <= 1  # Pillow rounds


def test_sixteen_bit_png_and_tiff_keep_their_values(tmp_path):
    image = np.arange(60 * 40, dtype=np.uint16).reshape(60, 40) * 20
    for name in ("a.png", "a.tif"):
        Image.fromarray(image).save(tmp_path / name)
        assert np.array_equal(read_slice(tmp_path / name).pixels, image)


def test_colour_images_are_turned_grey(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    pixels = read_slice(tmp_path / "c.jpg").pixels
    assert pixels.shape == (20, 30) and 100 < pixels.mean() < 140  # ITU-R 601 luma of pure green: 117


def test_dicom_geometry_window_and_monochrome1(tmp_path):
    pixels = np.tile(np.arange(48, dtype=np.uint16), (64, 1)) * 10
    path = dicom_slice(tmp_path / "s.dcm", pixels, spacing=(0.5, 0.8))
    image = read_slice(path)
    assert image.plane == "sagittal" and image.spacing == (0.5, 0.8) and image.window is None
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 200, 100
    ds.save_as(tmp_path / "m1", enforce_file_format=True)  # no extension: recognised by content
    inverted = read_slice(tmp_path / "m1")
    assert np.array_equal(inverted.pixels, pixels.max() - pixels.astype(np.float32))
    assert inverted.window == (pixels.max() - 250, pixels.max() - 150)


def test_a_damaged_compressed_dicom_is_refused_with_its_compression_named(tmp_path):
    path = dicom_slice(tmp_path / "s.dcm", np.zeros((8, 8), np.uint16))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51 not really jpeg 2000"])
    ds.save_as(tmp_path / "c.dcm")
    with pytest.raises(ValueError, match=r"compressed \(JPEG 2000.*\); the installed decoders .* could not decode it"):
        read_slice(tmp_path / "c.dcm")


def test_two_dimensional_nifti(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((30, 20, 1), np.float32), np.diag([0.7, 0.9, 3.0, 1.0])), tmp_path / "s.nii.gz")
    image = read_slice(tmp_path / "s.nii.gz")
    assert image.pixels.shape == (20, 30) and image.spacing == pytest.approx((0.9, 0.7))


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_expb.dcm"]
)
def test_compressed_and_big_endian_dicom_decode_to_the_uncompressed_pixels(name):
    # pydicom's own test files: one MR slice stored uncompressed and compressed losslessly by each codec.
    reference = read_slice(get_testdata_file("MR_small.dcm")).pixels
    assert np.array_equal(read_slice(get_testdata_file(name)).pixels, reference)


def test_lossy_jpeg_decodes_and_what_no_decoder_reads_is_said_with_the_reason():
    assert read_slice(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).pixels.shape == (100, 100)  # JPEG baseline, colour
    with pytest.raises(ValueError, match=r"JPEG Extended .*the installed decoders \(.*pylibjpeg.*\) could not decode"):
        read_slice(get_testdata_file("JPEG-lossy.dcm"))  # 12-bit extended JPEG: no installed decoder reads it
    with pytest.raises(ValueError, match="NumberOfFrames holds '1A', which is not a number"):
        read_slice(get_testdata_file("badVR.dcm"))


def test_each_frame_of_a_multi_frame_dicom_is_a_slice_with_its_own_geometry():
    path = get_testdata_file("rtdose.dcm")  # 15 frames of 10 x 10 at 10 mm, axial
    frames = read_frames(path)
    assert frame_count(path) == 15 and len(frames) == 15
    assert [f.name for f in frames[:2]] == ["rtdose_f001", "rtdose_f002"]
    assert all(f.pixels.shape == (10, 10) and f.spacing == (10.0, 10.0) and f.plane == "axial" for f in frames)
    assert not np.array_equal(frames[0].pixels, frames[7].pixels)
    with pytest.raises(ValueError, match=r"a multi-frame DICOM \(15 frames\): read it with read_frames"):
        read_slice(path)
    assert read_frames(get_testdata_file("MR_small.dcm"))[0].name == "MR_small"  # one frame: the file's name
