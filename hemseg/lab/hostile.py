"""Hostile but fair uploads, built on the spot: what `hemseg lab stress` sends the app, and what the tests read.

Each is a file a user, a broken export or a tester could send: bombs that are small on disk and huge once decoded,
headers that lie, markup in file names and DICOM fields, ground truths that cannot serve, and files that must
still be segmented (EXIF-rotated JPEG, colour, 16-bit, a 250-byte name).
"""

from __future__ import annotations

import functools
import gzip
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, MRImageStorage, generate_uid

ZEROS = bytes(2**20)


@dataclass
class Hostile:
    """One upload: ``expect`` "refused" (with ``says`` in the message) or "segmented" (with ``says`` in the
    summary, when given); ``options`` are further /segment arguments, such as a ground truth."""

    kind: str
    path: Path
    expect: str
    says: str = ""
    options: dict = field(default_factory=dict)
    shape: tuple[int, int] | None = None  # (rows, columns) the masks must have, when not the stored image's


def dicom_slice(path: Path, pixels: np.ndarray, spacing=(0.5, 0.8), **attributes) -> Path:
    """One sagittal DICOM slice of 16-bit ``pixels`` with ``spacing`` (mm); ``attributes`` set or override
    elements by keyword (``Rows=30000``), or with another VR than the standard's (``PixelSpacing=("LO", "wide")``):
    a broken export's way of writing words where numbers belong."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # rows along y, columns along -z: a sagittal slice
    ds.ImagePositionPatient, ds.PixelSpacing = [0, 0, 0], list(spacing)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in attributes.items():
        if isinstance(value, tuple):
            ds.add_new(pydicom.datadict.tag_for_keyword(keyword), *value)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def deflated_dicom(path: Path, rows: int, columns: int) -> Path:
    """A deflated DICOM of ``rows`` x ``columns`` zeros, streamed: 20000 x 20000 is 0.8 GB unpacked, 0.8 MB here."""
    header = pydicom.Dataset()
    header.SOPClassUID, header.SOPInstanceUID, header.Modality = MRImageStorage, generate_uid(), "MR"
    header.Rows, header.Columns, header.SamplesPerPixel, header.PhotometricInterpretation = (
        rows,
        columns,
        1,
        "MONOCHROME2",
    )
    header.BitsAllocated, header.BitsStored, header.HighBit, header.PixelRepresentation = 16, 16, 15, 0
    buffer = pydicom.filebase.DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True  # the deflated syntax's encoding
    pydicom.filewriter.write_dataset(buffer, header)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, header.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    pixel_bytes = rows * columns * 2
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(f), meta, enforce_standard=True)
        f.write(deflater.compress(buffer.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)))
        for start in range(0, pixel_bytes, len(ZEROS)):
            f.write(deflater.compress(ZEROS[: min(len(ZEROS), pixel_bytes - start)]))
        f.write(deflater.flush())
    return path


def nifti_of_zeros(path: Path, shape: tuple[int, ...], dim: tuple[int, ...] | None = None) -> Path:
    """A gzipped NIfTI of uint8 zeros, streamed (a 30000 x 30000 one is 0.9 GB unpacked, under 1 MB packed);
    ``dim`` writes other dimensions into the header than the data hold (a header that lies)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    raw = bytearray(header.binaryblock)
    if dim is not None:
        struct.pack_into("<8h", raw, 40, len(dim), *dim, *[1] * (7 - len(dim)))
    opener = functools.partial(gzip.open, compresslevel=1) if path.name.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(bytes(raw) + b"\0" * 4)  # the header, then 4 bytes of extension flags up to the data at 352
        total = int(np.prod(shape))
        for start in range(0, total, len(ZEROS)):
            f.write(ZEROS[: min(len(ZEROS), total - start)])
    return path


def _save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def build(folder: Path, example: Path) -> list[Hostile]:
    """Every hostile upload, written into ``folder``; ``example`` is a good grayscale PNG slice to vary."""
    folder.mkdir(parents=True, exist_ok=True)
    good = np.asarray(Image.open(example).convert("L"))
    lesion = np.zeros_like(good)
    lesion[10:20, 10:20] = 255
    cases: list[Hostile] = []

    def add(kind: str, make: Callable[[Path], Path], name: str, expect: str, says: str = "", **options) -> None:
        shape = options.pop("shape", None)
        cases.append(Hostile(kind, make(folder / name), expect, says, options, shape))

    def write(data: bytes) -> Callable[[Path], Path]:
        def make(path: Path) -> Path:
            path.write_bytes(data)
            return path

        return make

    rng = np.random.default_rng(0)
    png = example.read_bytes()
    nifti = nib.Nifti1Image(good.T[:, ::-1, None].astype(np.float32), np.eye(4))

    # Not images, or broken ones
    add("text named .png", write(b"this is not an image"), "notes.png", "refused", "could not be read as an image")
    add("empty file", write(b""), "empty.png", "refused", "empty")
    add("truncated PNG", write(png[:200]), "cut.png", "refused", "could not be read")
    add(
        "zip named .png",
        write(b"PK\x03\x04" + bytes(rng.integers(0, 256, 4000, np.uint8))),
        "zip.png",
        "refused",
        "could not be read as an image",
    )
    add(
        "random bytes named .nii.gz",
        write(bytes(rng.integers(0, 256, 5000, np.uint8))),
        "noise.nii.gz",
        "refused",
        "could not be read as NIfTI",
    )
    add("random bytes named .dcm", write(bytes(rng.integers(0, 256, 2**20, np.uint8))), "noise.dcm", "refused", "DICOM")
    add("broken DICOM header", write(b"\0" * 128 + b"DICM" + b"\x02\x00" * 20), "broken.dcm", "refused", "DICOM")

    # Bombs: small on disk, huge once decoded; refused from the header
    add(
        "PNG 20000 x 20000 (1 bit)",
        lambda p: _save(Image.new("1", (20_000, 20_000)), p),
        "bomb20000.png",
        "refused",
        "too large",
    )
    add("PNG 8192 x 8192", lambda p: _save(Image.new("L", (8192, 8192)), p), "bomb8192.png", "refused", "too large")
    add(
        "PNG 2049 x 2048, just above the cap",
        lambda p: _save(Image.new("L", (2049, 2048)), p),
        "over.png",
        "refused",
        "too large",
    )
    add(
        "TIFF 20000 x 20000 (deflate)",
        lambda p: _save(Image.new("L", (20_000, 20_000)), p, compression="tiff_adobe_deflate"),
        "bomb.tif",
        "refused",
        "too large",
    )
    add(
        "NIfTI 2D 30000 x 30000 (.nii.gz)",
        lambda p: nifti_of_zeros(p, (30_000, 30_000)),
        "bomb2d.nii.gz",
        "refused",
        "too large",
    )
    add(
        "NIfTI 600 x 600 x 200 (.nii.gz)",
        lambda p: nifti_of_zeros(p, (600, 600, 200)),
        "bomb3d.nii.gz",
        "refused",
        "too large",
    )
    add(
        "deflated DICOM 20000 x 20000",
        lambda p: deflated_dicom(p, 20_000, 20_000),
        "bomb.dcm",
        "refused",
        "unpacks to more than",
    )
    add(
        "DICOM header of 30000 x 30000, little data",
        lambda p: dicom_slice(p, good, Rows=30_000, Columns=30_000),
        "liar.dcm",
        "refused",
        "too large",
    )

    # Headers that cannot be
    add(
        "NIfTI with a negative dimension",
        lambda p: nifti_of_zeros(p, (4, 5, 6), dim=(4, -5, 6)),
        "negative.nii",
        "refused",
        "each must be at least 1",
    )
    add(
        "NIfTI with a zero dimension",
        lambda p: nifti_of_zeros(p, (4, 5, 6), dim=(4, 0, 6)),
        "zero.nii",
        "refused",
        "each must be at least 1",
    )
    add(
        "NIfTI header larger than its data",
        lambda p: nifti_of_zeros(p, (10, 10, 10), dim=(400, 400, 200)),
        "short.nii",
        "refused",
        "could not be read",
    )
    add("NIfTI 4D series", lambda p: _nifti(p, np.zeros((8, 8, 8, 3), np.float32)), "series.nii.gz", "refused", "4D")
    add(
        "NIfTI without orientation",
        lambda p: _nifti(p, np.zeros((8, 8, 8), np.float32), oriented=False),
        "noorient.nii.gz",
        "refused",
        "no orientation",
    )
    add(
        "TIFF of NaN",
        lambda p: _save(Image.fromarray(np.full((64, 64), np.nan, np.float32), mode="F"), p),
        "nan.tif",
        "refused",
        "NaN",
    )

    # Several images in one file
    frames = [Image.fromarray(good), Image.fromarray(255 - good)]
    add(
        "multi-page TIFF",
        lambda p: _save(frames[0], p, save_all=True, append_images=frames[1:]),
        "pages.tif",
        "refused",
        "holds 2 images",
    )
    add(
        "animated GIF",
        lambda p: _save(frames[0], p, save_all=True, append_images=frames[1:]),
        "anim.gif",
        "refused",
        "holds 2 images",
    )
    add(
        "multi-frame DICOM (its middle frame)",
        lambda p: dicom_slice(p, np.concatenate([good, good]), NumberOfFrames=2, Rows=good.shape[0]),
        "frames.dcm",
        "segmented",
        "frames_f002",
    )

    # Markup and words where numbers belong
    markup = "<img src=x onerror=alert(1)>"
    add(
        "DICOM with markup in PhotometricInterpretation",
        lambda p: dicom_slice(p, good, PhotometricInterpretation=("LO", markup)),
        "markup.dcm",
        "refused",
        "&lt;img",
    )
    add(
        "DICOM with words in PixelSpacing",
        lambda p: dicom_slice(p, good, PixelSpacing=("LO", "wide\\tall")),
        "spacing.dcm",
        "refused",
        "PixelSpacing holds",
    )
    add(
        "DICOM with words in WindowWidth",
        lambda p: dicom_slice(p, good, WindowCenter="100", WindowWidth=("LO", "wide")),
        "window.dcm",
        "refused",
        "WindowWidth holds",
    )
    add(
        "DICOM without pixel data",
        lambda p: _without_pixels(dicom_slice(p, good)),
        "nopixels.dcm",
        "refused",
        "no readable image",
    )
    add("markup in the file name", write(png), f"{markup}.png", "segmented", "img src=x onerror=alert(1)")

    # Files that must be segmented
    add("EXIF-rotated JPEG", lambda p: _rotated_jpeg(p, good), "rotated.jpg", "segmented", shape=good.shape)
    add("RGB PNG", lambda p: _save(Image.fromarray(np.stack([good] * 3, -1)), p), "rgb.png", "segmented")
    add("16-bit PNG", lambda p: _save(Image.fromarray(good.astype(np.uint16) * 257), p), "sixteen.png", "segmented")
    add("CMYK JPEG", lambda p: _save(Image.fromarray(good).convert("CMYK"), p, quality=95), "cmyk.jpg", "segmented")
    add("a 250-byte file name", write(png), "n" * 246 + ".png", "segmented")
    add("2D NIfTI slice", lambda p: _nifti(p, np.asarray(nifti.dataobj)), "slice.nii.gz", "segmented")

    # Ground truths that cannot serve: the segmentation is shown, the note says why the truth was not used
    add(
        "ground truth all 255",
        write(png),
        "truth255.png",
        "segmented",
        "every pixel as lesion",
        truth=str(_save(Image.fromarray(np.full_like(good, 255)), folder / "all255_mask.png")),
    )
    add(
        "ground truth with three values",
        write(png),
        "truth3.png",
        "segmented",
        "not binary",
        truth=str(
            _save(Image.fromarray((lesion // 2 + (good > 128) * 60).astype(np.uint8)), folder / "labels_mask.png")
        ),
    )
    add(
        "ground truth of another size",
        write(png),
        "truthsize.png",
        "segmented",
        "same size",
        truth=str(_save(Image.fromarray(lesion[:-3]), folder / "small_mask.png")),
    )
    return cases


def _nifti(path: Path, data: np.ndarray, oriented: bool = True) -> Path:
    """A NIfTI of ``data``; not ``oriented``: with no affine, so its qform and sform codes are 0."""
    nib.save(nib.Nifti1Image(data, np.eye(4) if oriented else None), path)
    return path


def _without_pixels(path: Path) -> Path:
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    return path


def _rotated_jpeg(path: Path, pixels: np.ndarray) -> Path:
    """``pixels`` stored turned a quarter (as a phone stores a portrait), with the EXIF note that turns it back."""
    image = Image.fromarray(np.ascontiguousarray(np.rot90(pixels, -1)))
    exif = Image.Exif()
    exif[0x0112] = 8  # Orientation 8: a viewer turns the stored image a quarter counter-clockwise
    image.save(path, quality=95, exif=exif)
    return path
