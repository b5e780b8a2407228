"""The largest inputs hemseg reads, checked from each file's header before any pixel is decoded.

A small file can unpack to gigabytes: a 65 KB PNG of 8192 x 8192, a 0.8 MB deflated DICOM of 20000 x 20000, a 1 MB
``.nii.gz`` of zeros. So the sizes are read from the header (Pillow's, DICOM's Rows/Columns/NumberOfFrames, NIfTI's
dim) and refused there, in words, before the decoder fills the memory.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

from PIL import Image

# One slice: an MRI slice is at most 1024 x 1024; a reader's screenshot rarely passes 2048 x 2048. A 2048 x 2048
# upload costs about 0.5 GB at its peak in the app, which keeps two requests at a time well under the 1.5 GB a
# 2-core Space can spare.
MAX_SIDE = 2048  # of a square slice at the cap
MAX_PIXELS = MAX_SIDE * MAX_SIDE
# One volume: the probabilities of every slice are held at once, about 0.5 GB per label at this size.
MAX_VOXELS = 512 * 512 * 256
# A deflated DICOM's dataset once unpacked: room for the largest slice in float64 and its header.
MAX_INFLATED_BYTES = MAX_PIXELS * 8 + 2**20

# Pillow's own guard, at our cap: it warns above MAX_IMAGE_PIXELS and refuses above twice that, when a file is
# opened; ``check_pixels`` refuses everything above the cap itself before the pixels are read.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def check_pixels(name: str, rows: int, columns: int, frames: int = 1) -> None:
    """ValueError unless ``rows x columns`` (x ``frames``) is a positive size within MAX_PIXELS."""
    if min(rows, columns, frames) < 1:
        raise ValueError(f"{name}: the header gives an image of {rows} x {columns} pixels, which cannot be")
    if rows * columns * frames > MAX_PIXELS:
        frames_note = f" x {frames} frames" if frames > 1 else ""
        raise ValueError(
            f"{name}: {columns} x {rows} pixels{frames_note} is too large for hemseg (at most {MAX_PIXELS:,} "
            f"pixels, {MAX_SIDE} x {MAX_SIDE}): crop it or scale it down"
        )


def check_shape(name: str, shape: tuple[int, ...], cap: int = MAX_VOXELS) -> None:
    """ValueError unless every dimension of a NIfTI header's ``shape`` is positive and their product within ``cap``."""
    if any(n < 1 for n in shape):
        raise ValueError(f"{name}: the NIfTI header gives the dimensions {tuple(shape)}; each must be at least 1")
    if math.prod(shape) > cap:
        raise ValueError(
            f"{name}: {' x '.join(map(str, shape))} voxels is too large for hemseg (at most {cap:,}): crop it, or "
            "give single slices"
        )


def check_inflated_size(path: Path, start: int) -> None:
    """ValueError when the deflated dataset from byte ``start`` of a DICOM file unpacks to more than
    MAX_INFLATED_BYTES. pydicom unpacks the whole of it before reading a single element, so it is measured here
    first, a chunk at a time, keeping none of it."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    unpacked = 0
    with open(path, "rb") as f:
        f.seek(start)
        while not inflater.eof and (chunk := f.read(2**16)):
            while chunk:  # at most 1 MB out per call; the input it has not used yet waits in unconsumed_tail
                try:
                    unpacked += len(inflater.decompress(chunk, 2**20))
                except zlib.error as err:
                    raise ValueError(f"{path.name}: the deflated DICOM data are damaged ({err})") from err
                if unpacked > MAX_INFLATED_BYTES:
                    raise ValueError(
                        f"{path.name}: the deflated DICOM unpacks to more than {MAX_INFLATED_BYTES // 2**20} MB, "
                        f"more than an image of at most {MAX_PIXELS:,} pixels needs"
                    )
                chunk = inflater.unconsumed_tail
