"""Reading MRI volumes (NIfTI, DICOM series) into one orientation, and cutting them into display slices.

Every volume is brought to nibabel's closest canonical orientation, RAS: array axis 0 runs left->right,
axis 1 posterior->anterior, axis 2 inferior->superior. Orientation comes from the NIfTI affine or the DICOM
geometry, never from the order in which the axes happen to be stored.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from nibabel.filebasedimages import ImageFileError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_rescale

from hemseg.data.limits import check_shape

PLANES = ("axial", "coronal", "sagittal")
# The array axis that a slice of each plane is cut across, in RAS order.
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
NIFTI_SUFFIXES = (".nii.gz", ".nii")
READ_ERRORS = (OSError, EOFError, zlib.error, ImageFileError, ValueError)
MAX_STEM_BYTES = 100
DICOM_ERRORS = (InvalidDicomError, AttributeError, KeyError, ValueError, TypeError, RuntimeError, NotImplementedError)


def file_stem(path: Path) -> str:
    """The name outputs made from ``path`` carry: its stem, for NIfTI the name up to its first dot (``x.nii.gz``).

    A stem over MAX_STEM_BYTES is cut and ends in a hash of the whole: file systems and Gradio cut names near 255
    and 200 bytes, which would give ``<long>_hemangioma.png`` and ``<long>_vertebral_body.png`` one name.
    """
    stem = path.name.split(".")[0] if path.name.lower().endswith(NIFTI_SUFFIXES) else path.stem
    encoded = stem.encode()
    if len(encoded) <= MAX_STEM_BYTES:
        return stem
    digest = hashlib.sha1(encoded).hexdigest()[:8]
    return encoded[: MAX_STEM_BYTES - 9].decode(errors="ignore") + "-" + digest


@dataclass
class Volume:
    """A volume in RAS voxel order with its voxel size in mm and, when known, its integer label map."""

    image: np.ndarray
    spacing: tuple[float, float, float]
    label: np.ndarray | None
    path: Path
    affine: np.ndarray  # voxel -> scanner mm (RAS), of the reoriented array


def nifti_header(path: str | Path) -> nib.Nifti1Image:
    """``nib.load`` (the header only; the data are read on access), its errors said as "could not be read", and a
    size that cannot be (a dimension below 1) or that is above MAX_VOXELS refused before the data are unpacked."""
    try:
        image = nib.load(path)
    except READ_ERRORS as err:
        raise ValueError(f"{path}: could not be read as NIfTI ({type(err).__name__}: {err})") from err
    check_shape(Path(path).name, image.shape)
    return image


def canonical_shape(image: nib.Nifti1Image) -> tuple[int, ...]:
    """The shape ``read_volume`` gives a NIfTI volume (its axes in RAS order), from the header alone."""
    shape = list(image.shape[:3])
    for stored, (axis, _) in enumerate(nib.io_orientation(image.affine)[: len(shape)]):
        shape[int(axis)] = image.shape[stored]
    return tuple(shape)


def _load_nifti(path: Path) -> nib.Nifti1Image:
    image = nifti_header(path)
    shape = image.shape[:3] if len(image.shape) == 4 and image.shape[3] == 1 else image.shape
    if len(shape) != 3:  # from the header, before reading the data
        raise ValueError(
            f"{path}: expected a 3D volume, found an array of shape {image.shape}"
            + (" (a 4D series: export one 3D volume or one slice)" if len(shape) == 4 else "")
        )
    try:
        data = np.asanyarray(image.dataobj).reshape(shape)  # reads the whole file: a truncated one fails here
    except READ_ERRORS as err:
        raise ValueError(f"{path}: could not be read as NIfTI ({type(err).__name__}: {err})") from err
    if int(image.header["qform_code"]) == 0 and int(image.header["sform_code"]) == 0:
        raise ValueError(
            f"{path}: the volume has no orientation (qform and sform codes are both 0), so hemseg cannot tell "
            "superior from inferior or anterior from posterior"
        )
    return nib.Nifti1Image(data, image.affine, image.header)


def read_label(path: Path, grid: nib.Nifti1Image, grid_path: Path) -> np.ndarray:
    """Read a label map and check that it covers the image's voxels; return it in RAS order.

    The two may be stored in different axis orders, but once reoriented their shapes and affines must match.
    """
    label = nib.as_closest_canonical(_load_nifti(path))
    if label.shape != grid.shape or not np.allclose(label.affine, grid.affine, atol=1e-3):
        raise ValueError(
            f"{path}: the label grid (shape {label.shape}) differs from its image {grid_path.name} "
            f"(shape {grid.shape}) or from its position in space; they must share one grid"
        )
    data = np.asanyarray(label.dataobj)
    if not np.issubdtype(data.dtype, np.integer) and not np.array_equal(data, np.round(data)):
        raise ValueError(f"{path}: a label map must hold integer ids, found fractional values")
    return np.ascontiguousarray(data, dtype=np.int32)


def read_volume(image_path: str | Path, label_path: str | Path | None = None) -> Volume:
    """Read a NIfTI file or a DICOM series folder, with an optional NIfTI label map on the same grid."""
    image_path = Path(image_path)
    grid = read_dicom_series(image_path) if image_path.is_dir() else _load_nifti(image_path)
    canonical = nib.as_closest_canonical(grid)
    label = read_label(Path(label_path), canonical, image_path) if label_path is not None else None
    spacing = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    # One copy in C order: nibabel's arrays are Fortran-ordered, and np.take across them copied the whole volume
    # for every slice it cut (quadratic in the volume's depth).
    image = np.ascontiguousarray(np.asanyarray(canonical.dataobj))
    return Volume(image, spacing, label, image_path, canonical.affine)


def read_dicom_series(folder: Path) -> nib.Nifti1Image:
    """One DICOM series (a folder of single-slice files) as a NIfTI image with a RAS affine.

    Slices are ordered by ImagePositionPatient along the slice normal; rescale slope and intercept are applied.
    """
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{folder}: the folder is empty")
    slices = []
    for file in files:
        try:
            ds = pydicom.dcmread(file)
            orientation = np.array(ds.ImageOrientationPatient, dtype=float)
            position = np.array(ds.ImagePositionPatient, dtype=float)
            pixels = apply_rescale(ds.pixel_array, ds).astype(np.float32)
            slices.append((ds, orientation, position, pixels))
        except DICOM_ERRORS as err:
            raise ValueError(
                f"{file}: could not be read as a DICOM slice with position and orientation ({err})"
            ) from err
    orientation = slices[0][1]
    if any(not np.allclose(s[1], orientation, atol=1e-4) or s[3].shape != slices[0][3].shape for s in slices):
        raise ValueError(f"{folder}: the files do not form one series (orientation or size differ)")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: float(s[2] @ normal))
    positions = np.array([s[2] for s in slices])
    steps = np.diff(positions @ normal)
    if len(slices) > 1 and (steps < 1e-3).any():
        raise ValueError(f"{folder}: two files share one slice position")
    row_spacing, col_spacing = (float(v) for v in slices[0][0].PixelSpacing)
    slice_step = (
        positions[1] - positions[0] if len(slices) > 1 else normal * float(slices[0][0].get("SliceThickness", 1))
    )
    # Array axes: (row r, column c, slice k); DICOM patient coordinates are LPS.
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = col_dir * row_spacing  # moving down a row follows the column direction
    affine_lps[:3, 1] = row_dir * col_spacing
    affine_lps[:3, 2] = slice_step
    affine_lps[:3, 3] = positions[0]
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    volume = np.stack([s[3] for s in slices], axis=-1)
    image = nib.Nifti1Image(volume, affine_ras)
    image.header.set_qform(affine_ras, code=1)
    image.header.set_sform(affine_ras, code=1)
    return image


def cut(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """One slice of a RAS volume shown the radiological way.

    Axial: anterior up, the patient's right on the viewer's left. Coronal: superior up, patient's right on the
    left. Sagittal: superior up, anterior on the left.
    """
    return np.moveaxis(volume, PLANE_AXIS[plane], 0)[index].T[::-1, ::-1]  # a view: np.take would copy the volume


def uncut(slices: np.ndarray, plane: str) -> np.ndarray:
    """A RAS volume from the (n, rows, cols) stack of every ``cut`` across ``plane``, in slice order."""
    return np.moveaxis(slices[:, ::-1, ::-1].transpose(0, 2, 1), 0, PLANE_AXIS[plane])


def plane_spacing(spacing: tuple[float, float, float], plane: str) -> tuple[float, float]:
    """(row, column) pixel size in mm of a slice cut by ``cut``."""
    kept = [s for axis, s in enumerate(spacing) if axis != PLANE_AXIS[plane]]
    return kept[1], kept[0]


def source_of(case: str) -> str:
    """The collection a case comes from: its id up to the first underscore (``vb2_04`` -> ``vb2``). In the shared
    spine set that is also its MRI sequence (see its README); prepare stratifies splits by it, evaluate reports it."""
    return case.split("_")[0]


def find_volumes(paths: list[str | Path]) -> list[tuple[str, Path, Path | None]]:
    """(case id, image path, label path or None) for every volume under ``paths``.

    A NIfTI case is ``<case>_image.nii[.gz]`` with an optional ``<case>_label.nii[.gz]`` beside it. A DICOM
    series is a folder of DICOM files; its label, if any, is ``<folder>_label.nii[.gz]`` beside the folder.
    """
    found: list[tuple[str, Path, Path | None]] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_file():
            found.append(_nifti_case(path))
        elif images := sorted(p for p in path.iterdir() if _is_image_file(p)):
            found.extend(_nifti_case(p) for p in images)
        elif any(pydicom.misc.is_dicom(p) for p in path.iterdir() if p.is_file()):
            found.append((path.name, path, _label_beside(path.parent, path.name)))
        else:
            series = sorted(p for p in path.iterdir() if p.is_dir())
            found.extend(entry for p in series for entry in find_volumes([p]))
    if not found:
        raise ValueError(f"no volumes found in {', '.join(map(str, paths))} (expected *_image.nii.gz or DICOM)")
    cases = [case for case, _, _ in found]
    if len(set(cases)) != len(cases):
        raise ValueError(f"two volumes share a case id: {sorted({c for c in cases if cases.count(c) > 1})}")
    return found


def _is_image_file(path: Path) -> bool:
    return path.is_file() and any(path.name.endswith("_image" + s) for s in NIFTI_SUFFIXES)


def _nifti_case(path: Path) -> tuple[str, Path, Path | None]:
    suffix = next((s for s in NIFTI_SUFFIXES if path.name.endswith(s)), None)
    if suffix is None:
        raise ValueError(f"{path}: not a NIfTI file (.nii or .nii.gz)")
    stem = path.name[: -len(suffix)]
    case = stem.removesuffix("_image")
    return case, path, _label_beside(path.parent, case)


def _label_beside(folder: Path, case: str) -> Path | None:
    return next((folder / f"{case}_label{s}" for s in NIFTI_SUFFIXES if (folder / f"{case}_label{s}").exists()), None)
