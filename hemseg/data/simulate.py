"""Simulated hemangiomas inserted in 3D into real vertebral bodies.

A lesion is a randomly rotated, irregular ellipsoid clipped to one vertebral body, so its mask is exact and lies
inside the body. Intensity changes multiply the tissue already there, keeping the scan's own noise and texture:

    image' = image * (1 + w * (contrast * (1 - depth * trabeculae) - 1))

where ``w`` is the lesion mask blurred by the partial-volume width and ``trabeculae`` are coarse vertical
(superior-inferior) columns: dots on axial slices ("polka dot"), stripes on sagittal and coronal ones
("corduroy"). Typical lesions are hyperintense (fat) and textured; atypical ones (little fat) hypo- or mildly
hyperintense with little texture. Every parameter is drawn per lesion from the ranges of ``SimulatorConfig``, wide
on purpose: the model will meet lesions and scanners this simulator never made. No lesion is iso-intense to its
body: a mask over tissue that looks unchanged marks nothing a reader (or a model) could see.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

SIMULATOR_VERSION = "1.1"  # 1.1: atypical lesions are never iso-intense


@dataclass(frozen=True)
class SimulatorConfig:
    """Ranges the per-lesion parameters are drawn from (uniformly unless stated)."""

    lesion_count_weights: tuple[float, ...] = (0.1, 0.4, 0.3, 0.2)  # P(0), P(1), P(2), P(3) lesions per case
    typical_share: float = 0.7
    radius_mm: tuple[float, float] = (2.0, 18.0)  # log-uniform; capped at 0.6 x the body's smallest extent
    elongation: tuple[float, float] = (0.65, 1.5)  # factor per semi-axis
    irregularity: tuple[float, float] = (0.0, 0.3)  # amplitude of smooth noise on the ellipsoid's surface
    edge_blur_mm: tuple[float, float] = (0.3, 1.2)  # partial-volume blur (Gaussian sigma)
    typical_contrast: tuple[float, float] = (1.25, 2.4)
    atypical_dark_contrast: tuple[float, float] = (0.45, 0.8)  # hypointense, drawn with P = atypical_dark_share ...
    atypical_bright_contrast: tuple[float, float] = (1.2, 1.6)  # ... else mildly hyperintense (T2, STIR)
    atypical_dark_share: float = 0.6
    typical_texture_depth: tuple[float, float] = (0.2, 0.6)
    atypical_texture_depth: tuple[float, float] = (0.0, 0.15)
    trabecula_spacing_mm: tuple[float, float] = (2.0, 4.5)
    trabecula_radius_mm: tuple[float, float] = (0.4, 1.0)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Lesion:
    """What was drawn for one simulated lesion; positions are in voxels of the RAS volume."""

    vertebra: int
    kind: str
    center_voxel: list[int]
    semi_axes_mm: list[float]
    contrast: float
    texture_depth: float
    irregularity: float
    edge_blur_mm: float
    trabecula_spacing_mm: float
    trabecula_radius_mm: float
    voxels: int = 0
    rotation: list[float] = field(default_factory=list)  # rotation vector (radians)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / (noise.std() + 1e-8)


def _trabeculae(rng: np.random.Generator, shape: tuple[int, int, int], spacing, lesion: Lesion) -> np.ndarray:
    """Vertical columns in [0, 1]: dots on a jittered grid in the axial (x, y) plane, extended along z."""
    pitch = lesion.trabecula_spacing_mm
    dots = np.zeros(shape[:2])
    for x in np.arange(rng.uniform(0, pitch), shape[0] * spacing[0], pitch):
        for y in np.arange(rng.uniform(0, pitch), shape[1] * spacing[1], pitch):
            jitter = rng.normal(0, 0.25 * pitch, 2)
            i, j = int((x + jitter[0]) / spacing[0]), int((y + jitter[1]) / spacing[1])
            if 0 <= i < shape[0] and 0 <= j < shape[1]:
                dots[i, j] = 1.0
    sigma = [lesion.trabecula_radius_mm / s for s in spacing[:2]]
    dots = ndimage.gaussian_filter(dots, sigma)
    dots /= dots.max() + 1e-8
    # Columns are not perfectly continuous: a slow variation along z breaks them up a little.
    along_z = 1 + 0.25 * _smooth_noise(rng, shape, (1.0, 1.0, 3.0 / spacing[2]))
    return np.clip(dots[:, :, None] * along_z, 0, 1)


def _contrast_range(rng: np.random.Generator, typical: bool, config: SimulatorConfig) -> tuple[float, float]:
    if typical:
        return config.typical_contrast
    dark = rng.random() < config.atypical_dark_share
    return config.atypical_dark_contrast if dark else config.atypical_bright_contrast


def _draw_lesion(rng: np.random.Generator, vertebra: int, body: np.ndarray, spacing, config) -> Lesion:
    extent_mm = [(np.ptp(np.nonzero(body)[a]) + 1) * spacing[a] for a in range(3)]
    radius_max = max(config.radius_mm[0] * 1.01, min(config.radius_mm[1], 0.6 * min(extent_mm)))
    radius = math.exp(rng.uniform(math.log(config.radius_mm[0]), math.log(radius_max)))
    typical = rng.random() < config.typical_share
    inner = ndimage.binary_erosion(body, iterations=2)
    candidates = np.argwhere(inner if inner.any() else body)
    return Lesion(
        vertebra=vertebra,
        kind="typical" if typical else "atypical",
        center_voxel=[int(v) for v in candidates[rng.integers(len(candidates))]],
        semi_axes_mm=[round(radius * _uniform(rng, config.elongation), 3) for _ in range(3)],
        contrast=_uniform(rng, _contrast_range(rng, typical, config)),
        texture_depth=_uniform(rng, config.typical_texture_depth if typical else config.atypical_texture_depth),
        irregularity=_uniform(rng, config.irregularity),
        edge_blur_mm=_uniform(rng, config.edge_blur_mm),
        trabecula_spacing_mm=_uniform(rng, config.trabecula_spacing_mm),
        trabecula_radius_mm=_uniform(rng, config.trabecula_radius_mm),
        rotation=[float(v) for v in Rotation.random(random_state=rng).as_rotvec()],
    )


def _render(rng, lesion: Lesion, body: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(exact mask inside ``body``, multiplicative intensity factor) over the body's bounding box."""
    offsets = [(np.arange(n) - c) * s for n, c, s in zip(body.shape, lesion.center_voxel, spacing, strict=True)]
    grid = np.stack(np.meshgrid(*offsets, indexing="ij"), axis=-1)
    local = grid @ Rotation.from_rotvec(lesion.rotation).as_matrix()  # coordinates in the lesion's own axes
    radius = np.sqrt(((local / np.array(lesion.semi_axes_mm)) ** 2).sum(-1))
    radius += lesion.irregularity * _smooth_noise(rng, body.shape, [2.0 / s for s in spacing])
    mask = (radius < 1) & body
    weight = ndimage.gaussian_filter(mask.astype(np.float32), [lesion.edge_blur_mm / s for s in spacing])
    texture = _trabeculae(rng, body.shape, spacing, lesion)
    factor = 1 + weight * (lesion.contrast * (1 - lesion.texture_depth * texture) - 1)
    return mask, factor


def insert_hemangiomas(
    image: np.ndarray,
    label: np.ndarray,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    config: SimulatorConfig = SimulatorConfig(),
) -> tuple[np.ndarray, np.ndarray, list[Lesion]]:
    """Insert 0-3 lesions into randomly chosen vertebral bodies of a RAS volume.

    Returns the new image (float32, clipped to the input dtype's range for integer inputs), the boolean
    lesion mask (inside ``label > 0``) and the drawn lesions.
    """
    out = image.astype(np.float32, copy=True)
    mask = np.zeros(label.shape, dtype=bool)
    vertebrae = [int(v) for v in np.unique(label) if v > 0]
    weights = np.asarray(config.lesion_count_weights) / np.sum(config.lesion_count_weights)
    count = int(rng.choice(len(weights), p=weights)) if vertebrae else 0
    lesions = []
    for _ in range(count):
        vertebra = int(rng.choice(vertebrae))
        box = ndimage.find_objects((label == vertebra).astype(np.int8))[0]
        body = label[box] == vertebra
        lesion = _draw_lesion(rng, vertebra, body, spacing, config)
        lesion_mask, factor = _render(rng, lesion, body, spacing)
        out[box] *= factor
        mask[box] |= lesion_mask
        lesion.voxels = int(lesion_mask.sum())
        lesion.center_voxel = [c + b.start for c, b in zip(lesion.center_voxel, box, strict=True)]
        lesions.append(lesion)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        np.clip(out, info.min, info.max, out=out)
    return out, mask, lesions
