"""Preprocessing shared by training, evaluation, prediction and the app."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# The contract saved in every model's config.json. Percentile scaling rather than a fixed window because
# MRI intensities have no absolute unit: each scanner and sequence puts tissue at a different grey level.
DEFAULT_PREPROCESSING: dict[str, Any] = {
    "size": [128, 128],
    "normalization": "percentile",
    "percentiles": [0.5, 99.5],
}


def normalize_intensity(image: torch.Tensor, percentiles: tuple[float, float] = (0.5, 99.5)) -> torch.Tensor:
    """Scale each image of a (..., H, W) batch so its low/high percentiles map to 0/1, clipped to [0, 1].

    A constant image becomes all zeros.
    """
    flat = image.flatten(-2).float()
    q = torch.tensor([percentiles[0] / 100, percentiles[1] / 100], dtype=flat.dtype, device=flat.device)
    lo_hi = torch.quantile(flat, q, dim=-1)
    lo, hi = lo_hi[0][..., None, None], lo_hi[1][..., None, None]
    scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return ((image.float() - lo) / scale).clamp_(0, 1) * (hi > lo)


def preprocess(image: np.ndarray | torch.Tensor, preprocessing: dict[str, Any] | None = None) -> torch.Tensor:
    """Turn one 2D grayscale image of any size and dtype into the model's (1, 1, H, W) float input.

    Raises ValueError for an image that is not 2D or holds NaN or infinite values.
    """
    settings = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
    if settings["normalization"] != "percentile":
        raise ValueError(f"unknown intensity normalization {settings['normalization']!r}")
    x = torch.as_tensor(np.asarray(image, dtype=np.float32) if isinstance(image, np.ndarray) else image).float()
    if x.ndim != 2:
        raise ValueError(f"expected one 2D grayscale image, got an array of shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("the image holds NaN or infinite values")
    x = F.interpolate(x[None, None], size=tuple(settings["size"]), mode="bilinear", antialias=True, align_corners=False)
    return normalize_intensity(x, tuple(settings["percentiles"]))
