"""Batched augmentation for training, run on the training device: the paper's rotation, flips, elastic deformation
and contrast, plus scaling, brightness, gamma, a bias field, noise, random intensity curves and blur."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Random transforms for training: the paper's (rotation, flips, elastic deformation, contrast) plus
    scaling, brightness, gamma, a smooth bias field and noise for scanner-to-scanner variation, and (when
    ``curve_p`` or ``blur_p`` is set) random intensity curves for sequence-to-sequence variation and random blur
    for coarser or thicker-sliced acquisitions."""

    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.75, 1.3)  # wide: clinical fields of view differ from our crops
    hflip: float = 0.5
    vflip: float = 0.1
    elastic_p: float = 0.5
    elastic_alpha: float = 0.04  # control-point displacement, in units of half the image size
    elastic_grid: int = 5
    contrast: tuple[float, float] = (0.7, 1.4)
    brightness: tuple[float, float] = (-0.1, 0.1)
    gamma: tuple[float, float] = (0.7, 1.5)
    bias_field: float = 0.3  # amplitude of the log of a smooth multiplicative field
    # Up to 0.05 left bundled model 4 fragile (`hemseg lab robustness`, docs/experiments.md): noise of 0.04 cut its
    # validation hemangioma pooled Dice from 0.67 to 0.42, noise of 0.12 its vertebral-body Dice_fg from 0.80 to 0.59.
    noise_std: tuple[float, float] = (0.0, 0.1)
    # Share of samples whose intensities go through a random curve (``random_curves``): tissues change rank between
    # sequences (T1, T2, STIR, water-fat), which contrast, brightness and gamma cannot mimic. Off by default.
    curve_p: float = 0.0
    curve_points: int = 5
    # Share of samples blurred by ``random_blur``: clinical slices are often thicker or coarser than these 1 mm
    # volumes, and "half resolution" cost the bundled model 15 % of its hemangioma Dice_fg. Off by default: 8
    # epochs of fine-tuning it with 0.3 did not make it hold up better (docs/experiments.md, "Random blur").
    blur_p: float = 0.0
    blur_max_sigma: float = 2.0  # pixels of the model grid, along each axis


# Geometry and intensity left as they are: with ``crop``, ``augment`` then only cuts windows.
NO_AUGMENT = AugmentConfig(
    rotation_deg=0,
    scale=(1, 1),
    hflip=0,
    vflip=0,
    elastic_p=0,
    contrast=(1, 1),
    brightness=(0, 0),
    gamma=(1, 1),
    bias_field=0,
    noise_std=(0, 0),
)


def _uniform(low: float, high: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _smooth_field(n: int, grid: int, size: tuple[int, int], generator: torch.Generator, device) -> torch.Tensor:
    coarse = torch.randn(n, 1, grid, grid, generator=generator, device=device)
    return F.interpolate(coarse, size=size, mode="bicubic", align_corners=True)


def _crop_centres(masks: torch.Tensor, crop: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, a random foreground pixel (uniform over all pixels for empty masks) jittered by up to a quarter
    of the crop, in the [-1, 1] coordinates of ``grid_sample``.

    The window is put on whole pixels, so an unrotated, unscaled crop copies pixels instead of interpolating them.
    """
    n, _, h, w = masks.shape
    weights = masks.amax(1).flatten(1).float() + 1e-6  # empty masks: every pixel equally likely
    index = torch.multinomial(weights, 1, generator=generator)[:, 0]
    jitter = (torch.rand(2, n, generator=generator, device=masks.device) - 0.5) * (crop / 2)
    half = (crop - 1) / 2  # from the window's first pixel to its centre
    row = torch.round(index // w + jitter[0] - half) + half
    col = torch.round(index % w + jitter[1] - half) + half
    return (2 * col + 1) / w - 1, (2 * row + 1) / h - 1


def random_curves(images: torch.Tensor, p: float, points: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of a (B, 1, H, W) batch in [0, 1], with probability ``p``, mapped through its own random
    piecewise-linear curve through ``points`` evenly spaced control points.

    The first control point stays 0 (air and the darkest tissue stay dark: every sequence shows air dark); the
    others are uniform in [0, 1], then scaled so the highest is 1, as percentile scaling would leave it. The curve
    need not rise, so tissues can swap rank (a T2 image made to look more like a T1 or a STIR one). Draws
    nothing from ``generator`` when ``p`` is 0.
    """
    if not p:
        return images
    n, device = images.shape[0], images.device
    values = torch.rand(n, points, generator=generator, device=device)
    values[:, 0] = 0
    values = values / values.amax(1, keepdim=True)  # the other points are almost surely not all 0
    chosen = torch.rand(n, generator=generator, device=device) < p
    x = images.clamp(0, 1).flatten(1) * (points - 1)
    low = x.floor().long().clamp(max=points - 2)  # x == points - 1 falls in the last segment
    start, end = values.gather(1, low), values.gather(1, low + 1)
    curved = (start + (end - start) * (x - low)).view_as(images)
    return torch.where(chosen[:, None, None, None], curved, images)


def random_blur(images: torch.Tensor, p: float, max_sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Each image of a (B, 1, H, W) batch, with probability ``p``, blurred by a Gaussian whose sd along the rows
    and along the columns are drawn each on its own, uniformly from [0, ``max_sigma``] pixels: a thicker slice
    blurs one direction (axial and coronal cuts of a sagittal acquisition), a coarser matrix both. Edges are
    extended, not darkened. Draws nothing from ``generator`` when ``p`` is 0.
    """
    if not p:
        return images
    n, device = images.shape[0], images.device
    sigma = torch.rand(n, 2, generator=generator, device=device) * max_sigma
    chosen = torch.rand(n, generator=generator, device=device) < p
    sigma = (sigma * chosen[:, None]).clamp(min=1e-3)  # an sd of 1e-3 px is a kernel of one tap: no blur
    radius = math.ceil(3 * max_sigma)
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernels = torch.exp(-0.5 * (offsets / sigma[..., None]) ** 2)  # (B, 2, taps)
    kernels = (kernels / kernels.sum(-1, keepdim=True)).to(images.dtype)
    # One convolution group per image, so each gets its own kernel.
    x = F.pad(images.transpose(0, 1), (radius,) * 4, mode="replicate")
    x = F.conv2d(x, kernels[:, 0, None, :, None], groups=n)  # down the rows
    x = F.conv2d(x, kernels[:, 1, None, None, :], groups=n)  # along the columns
    return x.transpose(0, 1)


def augment(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    config: AugmentConfig = AugmentConfig(),
    crop: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch on its own device: images (B, 1, H, W) in [0, 1], masks (B, C, H, W) in {0, 1}.

    One geometric warp (rotation, scale, flips, elastic) moves image and masks together; blur and intensity
    changes touch the image only. Deterministic for a given generator state. Masks come back binary.

    ``crop``: return (B, ., crop, crop) windows of the warped batch instead, each centred near a random foreground
    pixel (any label; anywhere when the masks are empty), so training at a fine grid costs what a coarse one does.
    """
    n, _, full_h, full_w = images.shape
    h, w = (crop, crop) if crop else (full_h, full_w)
    device = images.device
    angle = torch.deg2rad(_uniform(-config.rotation_deg, config.rotation_deg, n, generator, device))
    scale = _uniform(*config.scale, n, generator, device)
    flip_x = torch.where(torch.rand(n, generator=generator, device=device) < config.hflip, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=generator, device=device) < config.vflip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # theta maps output coordinates to input ones in [-1, 1]; a crop is a window of w / full_w of the input.
    zoom_x, zoom_y = w / full_w, h / full_h
    centre_x, centre_y = _crop_centres(masks, crop, generator) if crop else (torch.zeros_like(cos),) * 2
    theta = torch.stack(
        [
            torch.stack([cos * flip_x * zoom_x, -sin * zoom_y, centre_x], -1),
            torch.stack([sin * zoom_x, cos * flip_y * zoom_y, centre_y], -1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    elastic = torch.rand(n, generator=generator, device=device) < config.elastic_p
    displacement = torch.cat([_smooth_field(n, config.elastic_grid, (h, w), generator, device) for _ in range(2)], 1)
    alpha = config.elastic_alpha * min(zoom_x, zoom_y)  # the same bending per control-point spacing
    grid = grid + (alpha * displacement * elastic[:, None, None, None]).permute(0, 2, 3, 1)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5
    images = random_blur(images, config.blur_p, config.blur_max_sigma, generator)  # the truth stays sharp

    def per_sample(values: torch.Tensor) -> torch.Tensor:
        return values[:, None, None, None]

    images = random_curves(images, config.curve_p, config.curve_points, generator)
    mean = images.mean(dim=(-2, -1), keepdim=True)
    images = (images - mean) * per_sample(_uniform(*config.contrast, n, generator, device)) + mean
    images = images + per_sample(_uniform(*config.brightness, n, generator, device))
    images = images.clamp(0, 1) ** per_sample(_uniform(*config.gamma, n, generator, device))
    bias = config.bias_field * _smooth_field(n, 3, (h, w), generator, device)
    images = images * torch.exp(bias - bias.mean(dim=(-2, -1), keepdim=True))
    noise = torch.randn(images.shape, generator=generator, device=device)
    images = images + noise * per_sample(_uniform(*config.noise_std, n, generator, device))
    return images.clamp(0, 1), masks.float()
