"""The pixel size of an image that does not say it (PNG, JPEG, a screenshot), estimated by the model itself.

A model with a physical contract has learned vertebrae at one size in pixels. Run at the right pixel size, it
outlines vertebral bodies decisively, its probabilities near 0 or 1; too coarse or too fine, its responses fade
into wide uncertain bands and fall apart. So the image is tried at pixel sizes spread over every plausible field of
view (``FIELD_OF_VIEW_MM``, from a tight crop of one vertebra to a whole-spine image), the most decisive wins, and
a finer search around it follows. Nothing is assumed from the image's size in pixels beyond that range.

On validation slices of known pixel size the most decisive size is some factor times the true one, in the median:
the model's own factor, measured by `hemseg lab scale` and kept in its contract as ``scale_bias``, divides every
estimate (docs/evaluation.md gives the bundled model's measurement and its command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from hemseg.preprocessing import pad_to_multiple, preprocess

if TYPE_CHECKING:
    from hemseg.inference.segmenter import Segmenter

FIELD_OF_VIEW_MM = (60.0, 480.0)  # the longest side of one slice, from a crop around a vertebra to a whole spine
COARSE, FINE = 9, 7  # pixel sizes tried across the range, then around the best
MIN_AREA_MM2 = 150.0  # less response than this (a third of a small body's section) scores 0
RESPONSE = 0.1  # pixels below this probability are plain background and do not count


def decisiveness(probability: np.ndarray, pixel_mm: float) -> float:
    """How decisive a probability map is where it responds at all: the mean of |2p - 1| over the pixels of
    probability above ``RESPONSE``; 0 when those cover less than ``MIN_AREA_MM2``."""
    responding = probability > RESPONSE
    if responding.sum() * pixel_mm**2 < MIN_AREA_MM2:
        return 0.0
    return float(np.abs(2 * probability[responding] - 1).mean())


@torch.inference_mode()
def score(segmenter: Segmenter, image: np.ndarray, pixel_mm: float, label: str) -> float:
    """``decisiveness`` of ``label`` with the image taken to have square pixels of ``pixel_mm``."""
    x = preprocess(image, segmenter.model.preprocessing, (pixel_mm, pixel_mm))
    x, (rows, cols) = pad_to_multiple(x, 2**segmenter.model.depth)
    p = segmenter.tiled(x, tta=False)[0, segmenter.labels.index(label), rows, cols].numpy()
    return decisiveness(p, segmenter.model.preprocessing["spacing_mm"])


def estimate_pixel_size(segmenter: Segmenter, image: np.ndarray, label: str = "vertebral_body") -> float:
    """The pixel size (mm, square pixels) at which ``segmenter`` is most decisive about ``label`` (the first label
    when the model has no ``label``), divided by the model's ``scale_bias`` (1 when its contract has none)."""
    label = label if label in segmenter.labels else segmenter.labels[0]
    longest = max(np.shape(image))
    low, high = (fov / longest for fov in FIELD_OF_VIEW_MM)
    scores: dict[float, float] = {}  # the fine search's middle and ends are coarse sizes: each is run once

    def scored(size: float) -> float:
        key = round(float(size), 9)
        if key not in scores:
            scores[key] = score(segmenter, image, float(size), label)
        return scores[key]

    best = max(np.geomspace(low, high, COARSE), key=scored)
    step = (high / low) ** (1 / (COARSE - 1))  # one coarse step each way, searched finer
    best = max(np.geomspace(best / step, best * step, FINE), key=scored)
    return float(best) / segmenter.model.preprocessing.get("scale_bias", 1.0)
