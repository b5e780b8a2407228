"""Simulated hemangiomas inserted in 3D into real vertebral bodies.

A lesion is one to three randomly rotated, irregular ellipsoids (a lobulated lesion when several) clipped to one
vertebral body, so its mask is exact and lies inside the body; from a few mm across to the whole body. Intensity
changes multiply the tissue already there, keeping the scan's own noise and texture:

    image' = image * (1 + w * (contrast * (1 - depth * texture) * (1 + mottle) - 1))

where ``w`` is the lesion mask blurred by the partial-volume width, ``texture`` either coarse vertical
(superior-inferior) trabeculae (dots on axial slices, "polka dot"; stripes on sagittal and coronal ones,
"corduroy"), scattered spots, or nothing, and ``mottle`` a smooth unevenness. Typical lesions are hyperintense
(fat) and mostly trabecular; atypical ones (little fat) range from much darker than marrow to brighter, with any
texture. A case holds up to four lesions, some sharing a vertebra. Every parameter is drawn per lesion from the
ranges of ``SimulatorConfig``, wide on purpose: the model will meet lesions and scanners this simulator never made.
No lesion is iso-intense to its body: a mask over tissue that looks unchanged marks nothing a reader (or a model)
could see.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

# 1.1: atypical lesions are never iso-intense. 2.0: lobulated lesions up to the whole body, several per body, up to
# four per case, contrast from 0.3x to 3x, spotted and plain textures, mottling.
SIMULATOR_VERSION = "2.0"
TEXTURES = ("trabecular", "spotted", "plain")


@dataclass(frozen=True)
class SimulatorConfig:
    """Ranges the per-lesion parameters are drawn from (uniformly unless stated)."""

    lesion_count_weights: tuple[float, ...] = (0.15, 0.35, 0.25, 0.15, 0.1)  # P(0), ..., P(4) lesions per case
    same_body_share: float = 0.3  # a further lesion goes to a vertebra that already has one
    typical_share: float = 0.6
    radius_mm: tuple[float, float] = (1.5, 30.0)  # log-uniform; capped at 0.6 x the body's largest extent
    lobes: tuple[float, ...] = (0.6, 0.25, 0.15)  # P(1), P(2), P(3) ellipsoids in one lesion
    elongation: tuple[float, float] = (0.6, 1.6)  # factor per semi-axis
    irregularity: tuple[float, float] = (0.0, 0.4)  # amplitude of smooth noise on the ellipsoid's surface
    edge_blur_mm: tuple[float, float] = (0.2, 1.5)  # partial-volume blur (Gaussian sigma)
    typical_contrast: tuple[float, float] = (1.2, 3.0)  # log-uniform, as the atypical ranges
    atypical_dark_contrast: tuple[float, float] = (0.3, 0.82)  # hypointense, drawn with P = atypical_dark_share ...
    atypical_bright_contrast: tuple[float, float] = (1.15, 2.0)  # ... else hyperintense (T2, STIR)
    atypical_dark_share: float = 0.6
    typical_textures: tuple[float, float, float] = (0.75, 0.15, 0.1)  # P(trabecular), P(spotted), P(plain)
    atypical_textures: tuple[float, float, float] = (0.2, 0.3, 0.5)
    texture_depth: tuple[float, float] = (0.15, 0.6)  # of a trabecular or spotted texture
    trabecula_spacing_mm: tuple[float, float] = (2.0, 4.5)
    trabecula_radius_mm: tuple[float, float] = (0.4, 1.0)
    mottle: tuple[float, float] = (0.0, 0.25)  # amplitude of smooth unevenness inside the lesion

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
    texture: str
    texture_depth: float
    irregularity: float
    edge_blur_mm: float
    trabecula_spacing_mm: float
    trabecula_radius_mm: float
    mottle: float
    voxels: int = 0
    rotation: list[float] = field(default_factory=list)  # rotation vector (radians)
    lobes: list[list[float]] = field(default_factory=list)  # further ellipsoids: offset (mm, lesion axes), scale


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


def _spots(rng: np.random.Generator, shape: tuple[int, int, int], spacing, lesion: Lesion) -> np.ndarray:
    """Scattered round spots in [0, 1] (a coarse, honeycomb-like look), about one per trabecula spacing cubed."""
    volume_mm3 = float(np.prod([n * s for n, s in zip(shape, spacing, strict=True)]))
    count = max(1, int(volume_mm3 / lesion.trabecula_spacing_mm**3))
    spots = np.zeros(shape)
    spots[tuple(rng.integers(0, n, count) for n in shape)] = 1.0
    spots = ndimage.gaussian_filter(spots, [1.5 * lesion.trabecula_radius_mm / s for s in spacing])
    return spots / (spots.max() + 1e-8)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1])))


def _contrast_range(rng: np.random.Generator, typical: bool, config: SimulatorConfig) -> tuple[float, float]:
    if typical:
        return config.typical_contrast
    dark = rng.random() < config.atypical_dark_share
    return config.atypical_dark_contrast if dark else config.atypical_bright_contrast


def _draw_lesion(rng: np.random.Generator, vertebra: int, body: np.ndarray, spacing, config) -> Lesion:
    extent_mm = [(np.ptp(np.nonzero(body)[a]) + 1) * spacing[a] for a in range(3)]
    radius_max = max(config.radius_mm[0] * 1.01, min(config.radius_mm[1], 0.6 * max(extent_mm)))
    radius = _log_uniform(rng, (config.radius_mm[0], radius_max))
    typical = rng.random() < config.typical_share
    inner = ndimage.binary_erosion(body, iterations=2)
    candidates = np.argwhere(inner if inner.any() else body)
    center = [int(v) for v in candidates[rng.integers(len(candidates))]]
    textures = np.asarray(config.typical_textures if typical else config.atypical_textures, dtype=float)
    lobes = int(rng.choice(len(config.lobes), p=np.asarray(config.lobes) / sum(config.lobes)))
    return Lesion(
        vertebra=vertebra,
        kind="typical" if typical else "atypical",
        center_voxel=center,
        semi_axes_mm=[round(radius * _uniform(rng, config.elongation), 3) for _ in range(3)],
        contrast=_log_uniform(rng, _contrast_range(rng, typical, config)),
        texture=str(rng.choice(TEXTURES, p=textures / textures.sum())),
        texture_depth=_uniform(rng, config.texture_depth),
        irregularity=_uniform(rng, config.irregularity),
        edge_blur_mm=_uniform(rng, config.edge_blur_mm),
        trabecula_spacing_mm=_uniform(rng, config.trabecula_spacing_mm),
        trabecula_radius_mm=_uniform(rng, config.trabecula_radius_mm),
        mottle=_uniform(rng, config.mottle),
        rotation=[float(v) for v in Rotation.random(random_state=rng).as_rotvec()],
        # Further lobes: centred up to one semi-axis away, each 0.5-0.9 of the first.
        lobes=[
            [*(rng.uniform(-1, 1, 3) * radius).round(3).tolist(), round(rng.uniform(0.5, 0.9), 3)] for _ in range(lobes)
        ],
    )


def _render(rng, lesion: Lesion, body: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(exact mask inside ``body``, multiplicative intensity factor) over the body's bounding box.

    The texture varies the intensity around the lesion's contrast, not below it: its mean over the lesion is
    taken out, so ``contrast`` stays the lesion's mean intensity ratio and no texture makes a lesion iso-intense.
    """
    offsets = [(np.arange(n) - c) * s for n, c, s in zip(body.shape, lesion.center_voxel, spacing, strict=True)]
    grid = np.stack(np.meshgrid(*offsets, indexing="ij"), axis=-1)
    local = grid @ Rotation.from_rotvec(lesion.rotation).as_matrix()  # coordinates in the lesion's own axes
    axes = np.array(lesion.semi_axes_mm)
    radius = np.sqrt(((local / axes) ** 2).sum(-1))
    for *offset, scale in lesion.lobes:
        radius = np.minimum(radius, np.sqrt((((local - offset) / (axes * scale)) ** 2).sum(-1)))
    radius += lesion.irregularity * _smooth_noise(rng, body.shape, [2.0 / s for s in spacing])
    mask = (radius < 1) & body
    if not mask.any():  # the irregular surface missed every voxel of the body: keep the centre voxel
        mask[tuple(lesion.center_voxel)] = True
    weight = ndimage.gaussian_filter(mask.astype(np.float32), [lesion.edge_blur_mm / s for s in spacing])
    if lesion.texture == "plain":
        texture = np.zeros(body.shape)
    else:
        draw = _trabeculae if lesion.texture == "trabecular" else _spots
        texture = draw(rng, body.shape, spacing, lesion)
        texture -= texture[mask].mean()
    mottle = lesion.mottle * _smooth_noise(rng, body.shape, [3.0 / s for s in spacing])
    inside = lesion.contrast * (1 - lesion.texture_depth * texture) * (1 + mottle)
    factor = 1 + weight * (np.clip(inside, 0.05, None) - 1)
    return mask, factor


def insert_hemangiomas(
    image: np.ndarray,
    label: np.ndarray,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    config: SimulatorConfig = SimulatorConfig(),
) -> tuple[np.ndarray, np.ndarray, list[Lesion]]:
    """Insert lesions (as many as ``config.lesion_count_weights`` draws) into randomly chosen vertebral bodies of a
    RAS volume, a further one into a body that already has one with ``config.same_body_share``.

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
        taken = [lesion.vertebra for lesion in lesions]
        vertebra = int(rng.choice(taken if taken and rng.random() < config.same_body_share else vertebrae))
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
