"""Drawing masks over a slice for people to look at."""

from __future__ import annotations

import numpy as np

from hemseg.metrics import boundary

# One colour per label, readable on grey and for the common colour-vision deficiencies (Okabe-Ito).
LABEL_COLOURS = {"vertebral_body": (86, 180, 233), "hemangioma": (230, 159, 0)}
FALLBACK_COLOURS = ((0, 158, 115), (204, 121, 167), (240, 228, 66), (213, 94, 0))


def label_colour(label: str, position: int = 0) -> tuple[int, int, int]:
    return LABEL_COLOURS.get(label, FALLBACK_COLOURS[position % len(FALLBACK_COLOURS)])


def to_display(image: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Any grayscale array as 8-bit for display: the given (low, high) window, else its 0.5-99.5 percentiles."""
    image = np.asarray(image, dtype=np.float32)
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, dtype=np.uint8)
    lo, hi = window or np.percentile(finite, (0.5, 99.5))
    scaled = (np.nan_to_num(image, nan=lo) - lo) / (hi - lo if hi > lo else 1.0)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def gray_rgb(image: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """``to_display`` as an (H, W, 3) uint8 picture."""
    return np.repeat(to_display(image, window)[..., None], 3, axis=-1)


def overlay(
    image: np.ndarray,
    masks: dict[str, np.ndarray],
    opacity: float = 0.45,
    outline: bool = False,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """RGB uint8 picture of ``image`` with each mask filled (or outlined) in its label's colour."""
    return paint(gray_rgb(image, window), masks, opacity, outline)


def paint(picture: np.ndarray, masks: dict[str, np.ndarray], opacity: float = 0.45, outline: bool = False):
    """A copy of the RGB uint8 ``picture`` with each mask filled (or outlined) in its label's colour."""
    rgb = picture.astype(np.float32)
    for position, (label, mask) in enumerate(masks.items()):
        mask = np.asarray(mask, dtype=bool)
        if outline:
            mask = boundary(mask)
            alpha = 1.0
        else:
            alpha = opacity
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.array(label_colour(label, position), dtype=np.float32)
    return rgb.round().astype(np.uint8)
