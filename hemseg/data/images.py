"""Reading one 2D slice from the files users have: PNG, JPEG, TIFF, DICOM and 2D NIfTI."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.pixels import apply_rescale

from hemseg.data.limits import MAX_PIXELS, check_inflated_size, check_pixels, check_shape
from hemseg.data.volumes import DICOM_ERRORS, NIFTI_SUFFIXES, READ_ERRORS, file_stem, nifti_header

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights of Pillow's RGB -> "L"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")


@dataclass
class Slice:
    """A grayscale slice with what its file says about it."""

    pixels: np.ndarray
    spacing: tuple[float, float] | None = None  # (row, column) mm
    plane: str | None = None
    name: str = "image"
    window: tuple[float, float] | None = None  # (low, high) display window from the file, e.g. DICOM VOI


def plane_from_normal(normal: np.ndarray) -> str:
    """The anatomical plane whose normal is closest: x (left-right) sagittal, y coronal, z axial."""
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def read_slice(path: str | Path) -> Slice:
    """Read one slice; raise ValueError with a plain explanation when the file is not a usable image."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path.name}: the file is empty")
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return _read_nifti_slice(path)
    if name.endswith(IMAGE_SUFFIXES):
        return _read_picture(path)
    if name.endswith(".dcm") or pydicom.misc.is_dicom(path):
        return _read_dicom(path)
    try:  # unknown extension: let Pillow decide
        return _read_picture(path)
    except ValueError as err:
        raise ValueError(f"{path.name}: not an image hemseg can read (PNG, JPEG, TIFF, DICOM or NIfTI)") from err


def _read_picture(path: Path) -> Slice:
    try:
        with warnings.catch_warnings():  # Pillow warns above the cap; check_pixels says it in words
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            check_pixels(path.name, image.height, image.width)  # from the header: nothing is decoded yet
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise ValueError(
                    f"{path.name}: the file holds {frames} images (a multi-page TIFF or an animation); hemseg reads "
                    "one slice per file: save the one you want on its own"
                )
            # A camera or phone JPEG may be stored sideways with an EXIF note to turn it: show it as viewers do.
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGB", "RGBA", "P", "PA", "LA", "CMYK", "YCbCr"):
                image = image.convert("L")
            pixels = np.asarray(image)
    except Image.DecompressionBombError as err:  # Pillow refuses at twice the cap, before check_pixels can
        raise ValueError(f"{path.name}: the image is too large (at most {MAX_PIXELS:,} pixels)") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path.name}: could not be read as an image ({err})") from err
    if pixels.ndim != 2:
        raise ValueError(f"{path.name}: expected a grayscale image, found shape {pixels.shape}")
    return Slice(pixels, name=file_stem(path))


def _read_dicom(path: Path) -> Slice:
    header = _dicom_header(path)
    rows, columns, frames = (int(header.get(key) or 0) for key in ("Rows", "Columns", "NumberOfFrames"))
    if rows or columns:  # a file without them holds no image: reading it says so
        check_pixels(path.name, rows, columns, max(frames, 1))  # before pydicom decodes a single pixel
    if frames > 1:
        raise ValueError(f"{path.name}: a multi-frame DICOM ({frames} frames); export one frame")
    try:
        ds = pydicom.dcmread(path)
    except (*DICOM_ERRORS, OSError) as err:
        raise ValueError(f"{path.name}: not a readable DICOM file ({err})") from err
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    try:
        pixels = apply_rescale(ds.pixel_array, ds).astype(np.float32)
    except (*DICOM_ERRORS, OSError) as err:
        if syntax is not None and syntax.is_compressed:
            raise ValueError(
                f"{path.name}: the DICOM image is compressed ({syntax.name}) and hemseg has no decoder for it; "
                "export it uncompressed or as PNG"
            ) from err
        raise ValueError(f"{path.name}: the DICOM file holds no readable image ({err})") from err
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 3:
        pixels = pixels @ np.array(LUMA, np.float32)  # one colour frame (pydicom gives RGB): grey as Pillow's "L"
    window = _voi_window(ds, path.name)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":  # white is low: flip to the usual look
        top = float(pixels.max())
        pixels = top - pixels
        window = (top - window[1], top - window[0]) if window else None
    spacing = _numbers(ds, "PixelSpacing", path.name)
    plane = None
    if (orientation := _numbers(ds, "ImageOrientationPatient", path.name)) is not None and len(orientation) == 6:
        plane = plane_from_normal(np.cross(orientation[:3], orientation[3:]))
    return Slice(pixels, tuple(spacing[:2]) if spacing else None, plane, file_stem(path), window)


def _dicom_header(path: Path) -> pydicom.Dataset:
    """The DICOM header without the pixels. A deflated file is measured unpacked first: pydicom unpacks all of it
    before it reads the first element."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        deflated = meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian
        # The dataset starts after the 128-byte preamble, "DICM" and the meta group (its 12-byte length element
        # and the length it gives).
        start = 128 + 4 + 12 + int(meta.FileMetaInformationGroupLength) if deflated else 0
    except (*DICOM_ERRORS, OSError) as err:
        raise ValueError(f"{path.name}: not a readable DICOM file ({err})") from err
    if deflated:
        check_inflated_size(path, start)
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (*DICOM_ERRORS, OSError) as err:
        raise ValueError(f"{path.name}: not a readable DICOM file ({err})") from err


def _numbers(ds: pydicom.Dataset, keyword: str, name: str) -> list[float] | None:
    """A numeric DICOM attribute's values, None when absent; a value that is not a number named in the error."""
    if keyword not in ds:
        return None
    raw = ds[keyword]
    try:
        value = raw.value
        return [float(v) for v in (value if isinstance(value, pydicom.multival.MultiValue) else [value])]
    except (TypeError, ValueError) as err:
        shown = str(getattr(raw, "value", ""))[:40]
        raise ValueError(f"{name}: the DICOM field {keyword} holds {shown!r}, which is not a number") from err


def _voi_window(ds: pydicom.Dataset, name: str) -> tuple[float, float] | None:
    """The file's first display window (WindowCenter/WindowWidth) as (low, high), if it has one."""
    center, width = _numbers(ds, "WindowCenter", name), _numbers(ds, "WindowWidth", name)
    if not center or not width:
        return None
    return (center[0] - width[0] / 2, center[0] + width[0] / 2) if width[0] > 0 else None


def _read_nifti_slice(path: Path) -> Slice:
    image = nifti_header(path)
    check_shape(path.name, image.shape, MAX_PIXELS)  # from the header, before the data are unpacked
    try:
        data = np.asanyarray(image.dataobj)
    except READ_ERRORS as err:
        raise ValueError(f"{path.name}: could not be read as NIfTI ({err})") from err
    data = np.squeeze(data)
    if data.ndim != 2:
        raise ValueError(f"{path.name}: a NIfTI volume of shape {data.shape}; give one 2D slice")
    zooms = image.header.get_zooms()
    return Slice(data.T[::-1].astype(np.float32), (float(zooms[1]), float(zooms[0])), None, file_stem(path))
