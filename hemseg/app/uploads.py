"""Reading what a user uploads to the app: a slice, a NIfTI volume, a ground-truth mask."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import numpy as np

from hemseg.data.images import Slice, frame_count, read_frames, read_slice
from hemseg.data.volumes import (
    NIFTI_SUFFIXES,
    PLANE_AXIS,
    READ_ERRORS,
    Volume,
    cut,
    file_stem,
    nifti_header,
    plane_spacing,
    read_volume,
)


def without_folder(err: Exception, path: str) -> str:
    """The message of ``err`` without the server's folder of the upload ``path``: the user knows the file by name."""
    return str(err).replace(str(Path(path).parent) + "/", "")


def user_error(text: str) -> gr.Error:
    """A message for the page. Gradio shows it as HTML, and file names and DICOM fields are the uploader's text:
    escaped, ``<b>`` reads as ``<b>``. No traceback in the server's log: it is the user's input, not a fault."""
    return gr.Error(html.escape(text), print_exception=False)


def open_upload(path: str | None) -> Slice | Volume | list[Slice]:
    """A 2D slice, a 3D volume for NIfTI, or the frames of a multi-frame DICOM (DICOM series folders are out of
    reach of an upload). Sizes are checked from each file's header before its pixels are decoded
    (``hemseg.data.limits``)."""
    if not path:
        raise user_error("Please upload an image: PNG, JPEG, TIFF, DICOM or NIfTI.")
    try:
        is_nifti = path.lower().endswith(NIFTI_SUFFIXES)
        shape = nifti_header(path).shape if is_nifti else ()
        if len([n for n in shape if n > 1]) >= 3:
            return read_volume(path)
        if frame_count(path) > 1:
            return read_frames(path)
        return read_slice(path)
    except READ_ERRORS as err:
        raise user_error(without_folder(err, path)) from err


def choose_frame(frames: list[Slice], index: int) -> Slice:
    """Frame ``index`` of a multi-frame DICOM (-1: the middle one)."""
    return frames[len(frames) // 2 if index < 0 else min(index, len(frames) - 1)]


def choose_slice(volume: Volume, plane: str, index: int) -> Slice:
    axis = PLANE_AXIS[plane]
    depth = volume.image.shape[axis]
    index = depth // 2 if index < 0 else min(index, depth - 1)
    name = file_stem(volume.path)
    return Slice(cut(volume.image, plane, index), plane_spacing(volume.spacing, plane), plane, name)


def read_truth(truth: str, shape: tuple[int, ...]) -> np.ndarray:
    """An uploaded ground-truth mask as booleans (its higher value is the lesion); ValueError, in words a user
    understands, when it cannot serve: unreadable, another size, or not binary (more than two values)."""
    try:
        values = np.asarray(read_slice(truth).pixels)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"it could not be read ({without_folder(err, truth)})") from err
    if values.shape != shape:
        raise ValueError(
            f"it is {values.shape[1]} x {values.shape[0]} pixels but the image is {shape[1]} x {shape[0]}: they "
            "must have the same size"
        )
    distinct = np.unique(values)
    if len(distinct) == 1 and distinct[0] != 0:
        raise ValueError(
            f"it marks every pixel as lesion (every value is {distinct[0]:g}), which a slice's lesion mask never "
            "does: it was likely saved blank or inverted. Save it with 0 for background and 255 (or 1) for lesion"
        )
    if len(distinct) > 2:
        shown = ", ".join(f"{v:g}" for v in distinct[:4]) + (", ..." if len(distinct) > 4 else "")
        raise ValueError(
            f"it is not binary: it holds {len(distinct)} different values ({shown}), and a mask holds two, "
            "background and lesion. A label map, or a mask saved as JPEG (whose compression adds grey values), "
            "cannot be scored; save the lesion mask as PNG with 0 for background and 255 (or 1) for lesion"
        )
    return values == distinct[-1] if len(distinct) == 2 else values > 0
