"""Reading one 2D slice from the files users have: PNG, JPEG, TIFF, DICOM and 2D NIfTI."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_rescale
from pydicom.pixels.decoders.base import get_decoder

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
    if _is_dicom(path):
        frames = _read_dicom(path)
        if len(frames) > 1:
            raise ValueError(f"{path.name}: a multi-frame DICOM ({len(frames)} frames): read it with read_frames")
        return frames[0]
    try:  # unknown extension: let Pillow decide
        return _read_picture(path)
    except ValueError as err:
        raise ValueError(f"{path.name}: not an image hemseg can read (PNG, JPEG, TIFF, DICOM or NIfTI)") from err


def read_frames(path: str | Path) -> list[Slice]:
    """Every image of a file: one for most; for a multi-frame DICOM (an enhanced MR series, a cine, a colour
    series) each frame as a slice of its own, named ``<stem>_f<k>`` (k from 1), with its own pixel size and plane
    from the frame's functional groups where the file has them."""
    path = Path(path)
    if path.is_file() and path.stat().st_size and _is_dicom(path):
        return _read_dicom(path)
    return [read_slice(path)]


def frame_count(path: str | Path) -> int:
    """How many frames a DICOM file holds, from its header (1 for any other file, or one that cannot be read)."""
    path = Path(path)
    try:
        if not _is_dicom(path):
            return 1
        frames = _numbers(_dicom_header(path), "NumberOfFrames", path.name)
    except (ValueError, OSError):
        return 1
    return max(int(frames[0]), 1) if frames else 1


def _is_dicom(path: Path) -> bool:
    return path.name.lower().endswith(".dcm") or pydicom.misc.is_dicom(path)


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


def _read_dicom(path: Path) -> list[Slice]:
    header = _dicom_header(path)
    sizes = (_numbers(header, key, path.name) for key in ("Rows", "Columns", "NumberOfFrames"))
    rows, columns, frames = (int(size[0]) if size else 0 for size in sizes)
    if rows or columns:  # a file without them holds no image: reading it says so; before a pixel is decoded:
        check_pixels(path.name, rows, columns)  # each frame a slice's size at most,
        check_shape(path.name, (max(frames, 1), rows, columns))  # all of them a volume's
    try:
        ds = _dcmread(path)
    except (*DICOM_ERRORS, OSError) as err:
        raise ValueError(f"{path.name}: not a readable DICOM file ({err})") from err
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    try:
        pixels = apply_rescale(ds.pixel_array, ds).astype(np.float32)
    except (*DICOM_ERRORS, OSError) as err:
        if syntax is not None and syntax.is_compressed and "PixelData" in ds:
            raise ValueError(
                f"{path.name}: the DICOM image is compressed ({syntax.name}); {_decoder_note(syntax)}"
            ) from err
        raise ValueError(f"{path.name}: the DICOM file holds no readable image ({err})") from err
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        pixels = pixels @ np.array(LUMA, np.float32)  # colour (pydicom gives RGB): grey as Pillow's "L"
    pixels = pixels.reshape(-1, *pixels.shape[-2:])  # (frames, rows, columns), one frame or many
    window = _voi_window(ds, path.name)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":  # white is low: flip to the usual look
        top = float(pixels.max())
        pixels = top - pixels
        window = (top - window[1], top - window[0]) if window else None
    stem = file_stem(path)
    slices = []
    for k, frame in enumerate(pixels):
        spacing = _frame_numbers(ds, k, "PixelMeasuresSequence", "PixelSpacing", path.name)
        orientation = _frame_numbers(ds, k, "PlaneOrientationSequence", "ImageOrientationPatient", path.name)
        plane = plane_from_normal(np.cross(orientation[:3], orientation[3:])) if len(orientation or ()) == 6 else None
        name = stem if len(pixels) == 1 else f"{stem}_f{k + 1:03d}"
        slices.append(Slice(frame, tuple(spacing[:2]) if spacing else None, plane, name, window))
    return slices


def _frame_numbers(ds: pydicom.Dataset, frame: int, group: str, keyword: str, name: str) -> list[float] | None:
    """A numeric attribute of one frame: from its own functional group, else the shared one (enhanced DICOM), else
    the dataset's top level (every other DICOM)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        sequence = ds.get(groups)
        if sequence is not None and len(sequence) > index and group in sequence[index]:
            item = sequence[index][group]
            if len(item.value) and keyword in item[0]:
                return _numbers(item[0], keyword, name)
    return _numbers(ds, keyword, name)


def _decoder_note(syntax: pydicom.uid.UID) -> str:
    """Why a compressed image could not be decoded: no decoder installed (and which would serve), or the
    installed ones failed on it (a damaged or unusual file)."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return "no decoder exists for this compression in pydicom: export the image uncompressed or as PNG"
    if decoder.is_available:
        plugins = ", ".join(decoder.available_plugins)
        return (
            f"the installed decoders ({plugins}) could not decode it: a damaged file, or a variant they do not support"
        )
    missing = "; ".join(decoder.missing_dependencies) or "a pixel data plugin"
    return f"no decoder for it is installed ({missing}): install one (requirements.txt pins them)"


def _dicom_header(path: Path) -> pydicom.Dataset:
    """The DICOM header without the pixels. A deflated file is measured unpacked first: pydicom unpacks all of it
    before it reads the first element."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except (*DICOM_ERRORS, OSError):
        meta = pydicom.Dataset()  # no meta header: _dcmread reads what the elements say
    if meta.get("TransferSyntaxUID") == pydicom.uid.DeflatedExplicitVRLittleEndian:
        # The dataset starts after the 128-byte preamble, "DICM" and the meta group (its 12-byte length element
        # and the length it gives).
        check_inflated_size(path, 128 + 4 + 12 + int(meta.FileMetaInformationGroupLength))
    try:
        return _dcmread(path, stop_before_pixels=True)
    except (*DICOM_ERRORS, OSError) as err:
        raise ValueError(f"{path.name}: not a readable DICOM file ({err})") from err


ENCODINGS = {  # (implicit VR, little endian) -> the transfer syntax that encodes so, uncompressed
    (True, True): pydicom.uid.ImplicitVRLittleEndian,
    (False, True): pydicom.uid.ExplicitVRLittleEndian,
    (False, False): pydicom.uid.ExplicitVRBigEndian,
}


def _dcmread(path: Path, **options) -> pydicom.Dataset:
    """``pydicom.dcmread``. A file without the DICOM preamble and meta header (an old ACR-NEMA style export) is read
    as its elements say; one whose meta header names no transfer syntax is given the one its encoding shows, so
    that its pixels can be decoded."""
    try:
        ds = pydicom.dcmread(path, **options)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, force=True, **options)
    if "TransferSyntaxUID" not in ds.file_meta and ds.original_encoding in ENCODINGS:
        ds.file_meta.TransferSyntaxUID = ENCODINGS[ds.original_encoding]
    return ds


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
