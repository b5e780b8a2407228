"""Reading one 2D slice from the files users have: PNG, JPEG, TIFF, DICOM and 2D NIfTI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.pixels import apply_rescale

from hemseg.data.volumes import DICOM_ERRORS, NIFTI_SUFFIXES, READ_ERRORS, file_stem

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights of Pillow's RGB -> "L"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MAX_PIXELS = 8192 * 8192  # larger uploads are refused before decoding, not after filling the memory


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
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ValueError(
                    f"{path.name}: {image.width} x {image.height} pixels is too large (at most {MAX_PIXELS:,} pixels)"
                )
            if image.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
                image = image.convert("L")
            pixels = np.asarray(image)
    except Image.DecompressionBombError as err:  # Pillow refuses before our own size check can
        raise ValueError(f"{path.name}: the image is too large (at most {MAX_PIXELS:,} pixels)") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path.name}: could not be read as an image ({err})") from err
    if pixels.ndim != 2:
        raise ValueError(f"{path.name}: expected a grayscale image, found shape {pixels.shape}")
    return Slice(pixels, name=file_stem(path))


def _read_dicom(path: Path) -> Slice:
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
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 3 and int(ds.get("NumberOfFrames", 1)) == 1:
        pixels = pixels @ np.array(LUMA, np.float32)  # one colour frame (pydicom gives RGB): grey as Pillow's "L"
    if pixels.ndim != 2:
        raise ValueError(f"{path.name}: a multi-frame DICOM ({pixels.shape}); export one frame")
    window = _voi_window(ds)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":  # white is low: flip to the usual look
        top = float(pixels.max())
        pixels = top - pixels
        window = (top - window[1], top - window[0]) if window else None
    spacing = tuple(float(v) for v in ds.PixelSpacing) if "PixelSpacing" in ds else None
    plane = None
    if "ImageOrientationPatient" in ds:
        orientation = np.array(ds.ImageOrientationPatient, dtype=float)
        plane = plane_from_normal(np.cross(orientation[:3], orientation[3:]))
    return Slice(pixels, spacing, plane, file_stem(path), window)


def _voi_window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """The file's first display window (WindowCenter/WindowWidth) as (low, high), if it has one."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None

    def first(value) -> float:
        return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)

    center, width = first(ds.WindowCenter), first(ds.WindowWidth)
    return (center - width / 2, center + width / 2) if width > 0 else None


def _read_nifti_slice(path: Path) -> Slice:
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except READ_ERRORS as err:
        raise ValueError(f"{path.name}: could not be read as NIfTI ({err})") from err
    data = np.squeeze(data)
    if data.ndim != 2:
        raise ValueError(f"{path.name}: a NIfTI volume of shape {data.shape}; give one 2D slice")
    zooms = image.header.get_zooms()
    return Slice(data.T[::-1].astype(np.float32), (float(zooms[1]), float(zooms[0])), None, file_stem(path))
