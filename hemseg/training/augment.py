"""Batched augmentation for training, run on the training device: the paper's rotation, flips, elastic deformation
and contrast, plus scaling, brightness, gamma, a bias field, noise, random intensity curves, random tissue
intensities (after SynthSeg), blur and fields of view cut as a reader crops a slice."""

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
    # Share of samples whose tissues get new intensities (``random_tissues``, after SynthSeg: Billot et al., Medical
    # Image Analysis 2023): intensity classes of the image, each given a random grey level, so the model meets
    # contrasts neither of our two sequences has (T1, STIR). Off by default.
    tissue_p: float = 0.0
    tissue_classes: tuple[int, int] = (3, 7)  # fewest and most intensity classes, drawn per batch
    # Share of samples cut to a random field of view (``cut_field_of_view``): a rectangle from ``fov_min`` pixels a
    # side up to the whole window, the rest unscored and black (until the intensity changes after it), the inside
    # rescaled by its own percentiles as a reader's crop would be. With the physical contract, crops of any size are
    # then the same task. Off by default.
    fov_p: float = 0.0
    fov_min: int = 48  # pixels of the model grid (60 mm at 1.25 mm a pixel)


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


def _crop_centres(
    masks: torch.Tensor, crop: int, generator: torch.Generator, inside: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, a random foreground pixel (for empty masks a pixel of the image, ``inside`` where given, else any)
    jittered by up to a quarter of the crop, in the [-1, 1] coordinates of ``grid_sample``.

    The window is put on whole pixels, so an unrotated, unscaled crop copies pixels instead of interpolating them.
    """
    n, _, h, w = masks.shape
    # Empty masks: every pixel of the image equally likely, so a slice through no body is not a window of padding.
    fallback = 1e-6 * (1 if inside is None else inside.flatten(1).float() + 1e-6)
    weights = masks.amax(1).flatten(1).float() + fallback
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


def random_tissues(
    images: torch.Tensor, p: float, classes: tuple[int, int], generator: torch.Generator, inside: torch.Tensor | None
) -> torch.Tensor:
    """Each image of a (B, 1, H, W) batch in [0, 1], with probability ``p``, given new tissue intensities.

    After SynthSeg (Billot et al., Medical Image Analysis 2023), which draws a random intensity for every tissue
    class: the pixels fall into K intensity classes (quantiles of the lightly smoothed image within ``inside``, K
    drawn per batch from ``classes``), each class gets a random grey level, and each pixel keeps its offset from its
    class's mean, scaled by a random gain, so texture and edges survive. The darkest class (air, cortical bone,
    which are dark in every sequence) stays dark. Draws nothing from ``generator`` when ``p`` is 0.
    """
    if not p:
        return images
    n, device = images.shape[0], images.device
    k = int(torch.randint(classes[0], classes[1] + 1, (1,), generator=generator, device=device))
    tissue = tissue_classes(images, k, inside).flatten(1)
    flat = images.flatten(1)
    one_hot = F.one_hot(tissue, k).to(flat.dtype)
    means = (flat[:, :, None] * one_hot).sum(1) / one_hot.sum(1).clamp(min=1)  # (B, K)
    levels = torch.rand(n, k, generator=generator, device=device)
    levels[:, 0] = 0.15 * torch.rand(n, generator=generator, device=device)
    gain = _uniform(0.5, 1.5, n, generator, device)[:, None]
    remapped = levels.gather(1, tissue) + gain * (flat - means.gather(1, tissue))
    chosen = torch.rand(n, generator=generator, device=device) < p
    return torch.where(chosen[:, None, None, None], remapped.view_as(images).clamp(0, 1), images)


def tissue_classes(images: torch.Tensor, k: int, inside: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W) classes 0..k-1 of a (B, 1, H, W) batch: intensity bands of equal share of the pixels within
    ``inside`` (all where None), of the image smoothed over 3 x 3 pixels so that noise does not speckle them."""
    smooth = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False).flatten(1)
    valid = smooth if inside is None else torch.where(inside.flatten(1) > 0, smooth, torch.nan)
    quantiles = torch.linspace(0, 1, k + 1, device=images.device)[1:-1]
    thresholds = torch.nanquantile(valid.float(), quantiles, dim=1).T.nan_to_num(1.0)  # (B, K - 1)
    return (smooth[:, :, None] > thresholds[:, None, :]).sum(-1).view(images.shape[0], *images.shape[-2:])


def cut_field_of_view(
    images: torch.Tensor,
    masks: torch.Tensor,
    weights: torch.Tensor | None,
    p: float,
    min_side: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """With probability ``p`` per sample, only a random rectangle of the (B, ., H, W) window is kept, as a reader
    crops a slice: sides from ``min_side`` to the whole window, holding the window's centre (the anatomy the window
    was centred on). Outside it the image is black and nothing is scored (``weights`` 0, masks 0); inside, the
    image is rescaled by its own 0.5 and 99.5 percentiles, as preprocessing rescales a cropped upload. Draws
    nothing from ``generator`` when ``p`` is 0."""
    if not p:
        return images, masks, weights
    n, _, h, w = images.shape
    device = images.device
    spans = []
    for length in (h, w):
        side = torch.floor(_uniform(min(min_side, length), length + 1, n, generator, device)).clamp(max=length)
        low = (length // 2 - side + 1).clamp(min=0)  # the box holds the centre pixel ...
        high = torch.minimum(torch.full_like(side, length // 2), length - side)  # ... and stays in the window
        start = torch.floor(low + torch.rand(n, generator=generator, device=device) * (high - low + 1)).clamp(max=high)
        index = torch.arange(length, device=device)
        spans.append((index >= start[:, None]) & (index < (start + side)[:, None]))
    chosen = torch.rand(n, generator=generator, device=device) < p
    box = (spans[0][:, :, None] & spans[1][:, None, :])[:, None] | ~chosen[:, None, None, None]
    inside = torch.where(box, images, torch.nan).flatten(1).float()
    low, high = torch.nanquantile(inside, torch.tensor([0.005, 0.995], device=device), dim=1)
    rescaled = ((images - low[:, None, None, None]) / (high - low).clamp(min=1e-3)[:, None, None, None]).clamp(0, 1)
    images = torch.where(chosen[:, None, None, None], rescaled, images) * box
    weights = None if weights is None else weights * box
    return images, masks * box, weights


def augment(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator,
    config: AugmentConfig = AugmentConfig(),
    crop: int | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Augment a batch on its own device: images (B, 1, H, W) in [0, 1], masks (B, C, H, W) in {0, 1}, and the
    optional (B, C, H, W) loss weights in {0, 1} (``hemseg.training.tensors.label_weights``).

    One geometric warp (rotation, scale, flips, elastic) moves image, masks and weights together (pixels warped in
    from outside get weight 0); blur and intensity changes touch the image only. Deterministic for a given generator
    state. Masks and weights come back binary.

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
    inside = None if weights is None else weights.amax(1, keepdim=True)
    centre_x, centre_y = _crop_centres(masks, crop, generator, inside) if crop else (torch.zeros_like(cos),) * 2
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
    if weights is not None:
        weights = (
            F.grid_sample(weights, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5
        ).float()
    images, masks, weights = cut_field_of_view(images, masks, weights, config.fov_p, config.fov_min, generator)
    images = random_blur(images, config.blur_p, config.blur_max_sigma, generator)  # the truth stays sharp

    def per_sample(values: torch.Tensor) -> torch.Tensor:
        return values[:, None, None, None]

    images = random_curves(images, config.curve_p, config.curve_points, generator)
    inside = None if weights is None else weights.amax(1, keepdim=True)
    images = random_tissues(images, config.tissue_p, config.tissue_classes, generator, inside)
    mean = images.mean(dim=(-2, -1), keepdim=True)
    images = (images - mean) * per_sample(_uniform(*config.contrast, n, generator, device)) + mean
    images = images + per_sample(_uniform(*config.brightness, n, generator, device))
    images = images.clamp(0, 1) ** per_sample(_uniform(*config.gamma, n, generator, device))
    bias = config.bias_field * _smooth_field(n, 3, (h, w), generator, device)
    images = images * torch.exp(bias - bias.mean(dim=(-2, -1), keepdim=True))
    noise = torch.randn(images.shape, generator=generator, device=device)
    images = images + noise * per_sample(_uniform(*config.noise_std, n, generator, device))
    return images.clamp(0, 1), masks.float(), weights
