"""Prediction: `Segmenter` loads a model once and segments slices of any size."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub.errors import HfHubHTTPError
from scipy import ndimage

from hemseg.data.images import Slice, read_slice
from hemseg.hub import is_path_not_hub_id
from hemseg.inference.scale import estimate_pixel_size
from hemseg.metrics import EIGHT
from hemseg.model import UNet
from hemseg.preprocessing import content_box, from_model_grid, pad_to_multiple, physical, preprocess
from hemseg.speed import fold_batchnorm, precision_context

BUNDLED_MODEL = Path(__file__).parents[1] / "bundled_model"
LOAD_ERRORS = (OSError, ValueError, HfHubHTTPError)
logger = logging.getLogger(__name__)


def cut(probability: np.ndarray, threshold: float, seed: float | None = None) -> np.ndarray:
    """The mask ``probability >= threshold``; with ``seed``, only those of its 8-connected components whose highest
    probability reaches ``seed`` (hysteresis thresholding).

    A seed removes the weak, isolated false alarms and keeps every pixel of a confident lesion down to
    ``threshold``. Components are 8-connected and the comparisons inclusive, as ``hemseg.metrics`` counts lesions
    (``skimage.filters.apply_hysteresis_threshold`` uses 4-connected ones and strict comparisons).
    """
    mask = probability >= threshold
    if seed is None or seed <= threshold or not mask.any():
        return mask
    components, n = ndimage.label(mask, structure=EIGHT)
    peaks = ndimage.maximum(probability, components, index=np.arange(1, n + 1))
    return np.concatenate([[False], peaks >= seed])[components]


@dataclass
class Prediction:
    """Per-label probability maps and masks at the input's size, with the numbers users ask for."""

    probabilities: dict[str, np.ndarray]
    threshold: float
    spacing: tuple[float, float] | None = None  # (row, column) mm: the pixel size the model was run with
    seeds: dict[str, float] = field(default_factory=dict)  # the model's seed thresholds, per label
    spacing_source: str | None = None  # "file", "given" or "estimated"; None when no pixel size is known

    @cached_property
    def masks(self) -> dict[str, np.ndarray]:
        return {label: cut(p, self.threshold, self.seeds.get(label)) for label, p in self.probabilities.items()}

    @property
    def area_unit(self) -> str:
        return "mm2" if self.spacing else "px"

    def area(self, label: str) -> float:
        """Foreground area in mm^2 when the pixel spacing is known, else in pixels."""
        pixels = float(self.masks[label].sum())
        return pixels * self.spacing[0] * self.spacing[1] if self.spacing else pixels

    def count(self, label: str) -> int:
        """Number of 8-connected components (lesions) of a label's mask."""
        return int(ndimage.label(self.masks[label], structure=EIGHT)[1])

    def with_threshold(self, threshold: float) -> Prediction:
        """The same probabilities cut at another threshold, without running the model again."""
        return Prediction(self.probabilities, threshold, self.spacing, self.seeds, self.spacing_source)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --precision and --tta, shared by the commands that run a model."""
    parser.add_argument(
        "--model", help="local folder or Hub id[@revision]; default: HEMSEG_MODEL, else the bundled model"
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16 runs faster where the CPU has native bf16 (AMX); fp32 elsewhere",
    )
    parser.add_argument("--tta", action="store_true", help="average with the left-right mirrored prediction")


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """``user/repo@revision`` -> (``user/repo``, ``revision``); local folders pass through."""
    if Path(spec).exists() or "@" not in spec:
        return spec, None
    repo, revision = spec.rsplit("@", 1)
    return repo, revision


def load_model(spec: str | Path) -> UNet:
    """A UNet from a local folder or a Hub id (``id@revision``), through huggingface_hub's cache."""
    repo, revision = parse_model_spec(str(spec))
    if not Path(repo).exists() and is_path_not_hub_id(repo):
        raise FileNotFoundError(f"{spec}: no such model folder")
    try:
        return UNet.from_pretrained(repo, revision=revision)
    except LOAD_ERRORS as err:
        raise ValueError(f"could not load the model {spec!r}: {err}") from err


class Segmenter:
    """A loaded model with its preprocessing contract: ``Segmenter.load().predict("slice.png")``."""

    def __init__(
        self,
        model: UNet,
        source: str,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        optimize: bool = True,
        tta: bool = False,
    ) -> None:
        self.model = model.eval().to(device)
        self.source = source
        self.device = torch.device(device)
        self.precision = precision
        self.tta = tta  # the default of every call: averaging with the left-right mirrored prediction
        # With ``optimize``, the same weights with BatchNorm folded into the convolutions, in channels-last
        # memory: fewer passes over the feature maps (hemseg.speed; measured by `hemseg lab bench`).
        self.memory_format = torch.channels_last if optimize else torch.contiguous_format
        self.network = fold_batchnorm(self.model).to(memory_format=self.memory_format) if optimize else self.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (fp32) for a preprocessed batch."""
        with precision_context(self.device, self.precision):
            return self.network(x.to(self.device).contiguous(memory_format=self.memory_format)).float()

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    @classmethod
    def load(cls, model: str | Path | None = None, **options) -> Segmenter:
        """``model`` if given; else ``$HEMSEG_MODEL``; else, or when that cannot be loaded, the bundled model.

        ``options`` (device, precision, tta) go to the constructor.
        """
        if model is not None:
            return cls(load_model(model), str(model), **options)
        spec = os.environ.get("HEMSEG_MODEL")
        if spec:
            try:
                return cls(load_model(spec), spec, **options)
            except (ValueError, FileNotFoundError) as err:
                logger.warning("HEMSEG_MODEL=%s could not be loaded (%s); using the bundled model", spec, err)
        if not (BUNDLED_MODEL / "model.safetensors").exists():
            raise FileNotFoundError(f"no bundled model at {BUNDLED_MODEL} and no HEMSEG_MODEL set")
        return cls(UNet.from_pretrained(BUNDLED_MODEL), "bundled", **options)

    @property
    def physical(self) -> bool:
        """Whether the model works at a fixed pixel size (its contract's ``fit: spacing``)."""
        return physical(self.model.preprocessing)

    def sigmoid(self, x: torch.Tensor, tta: bool) -> torch.Tensor:
        """Probabilities for a preprocessed batch; with ``tta`` averaged with the left-right mirrored prediction."""
        p = torch.sigmoid(self.forward(x))
        if tta:
            p = (p + torch.sigmoid(self.forward(x.flip(-1))).flip(-1)) / 2
        return p.cpu()

    def tiled(self, x: torch.Tensor, tta: bool) -> torch.Tensor:
        """``sigmoid`` over a padded batch; one larger than the contract's ``tile`` on a side runs in overlapping
        tiles, each pixel the weighted mean of the tiles over it (weights falling towards a tile's edges)."""
        tile = self.model.preprocessing.get("tile", 512)
        h, w = x.shape[-2:]
        if h <= tile and w <= tile:
            return self.sigmoid(x, tta)
        step = tile // 2
        sizes = (min(tile, h), min(tile, w))
        ramps = [torch.minimum(torch.arange(n) + 1, torch.arange(n).flip(0) + 1).float() for n in sizes]
        weight = torch.outer(*ramps)
        total = torch.zeros(x.shape[0], len(self.labels), h, w)
        weights = torch.zeros(h, w)
        for top in sorted({*range(0, h - sizes[0], step), h - sizes[0]}):
            for left in sorted({*range(0, w - sizes[1], step), w - sizes[1]}):
                rows, cols = slice(top, top + sizes[0]), slice(left, left + sizes[1])
                total[..., rows, cols] += self.sigmoid(x[..., rows, cols], tta) * weight
                weights[rows, cols] += weight
        return total / weights

    @torch.inference_mode()
    def probabilities(
        self,
        images: list[np.ndarray],
        spacings: list[tuple[float, float] | None] | None = None,
        *,
        tta: bool | None = None,
        batch_size: int = 16,
    ) -> list[np.ndarray]:
        """(labels, H, W) float32 probabilities for each image, at each image's own size; ``tta`` None: the
        segmenter's own setting. A model with a physical contract takes each image's pixel size from ``spacings``
        and estimates it where that is missing or None (``hemseg.inference.scale``)."""
        tta = self.tta if tta is None else tta
        if self.physical:
            spacings = spacings or [None] * len(images)
            known = [self.pixel_size(image, spacing)[0] for image, spacing in zip(images, spacings, strict=True)]
            return self.physical_probabilities(images, known, tta, batch_size)
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = torch.cat([preprocess(image, self.model.preprocessing) for image in chunk])
            probs = torch.zeros(len(chunk), len(self.labels), *x.shape[-2:])
            # The model sees only the part of its square grid that holds the image, not the padding around it;
            # images of one shape share a window, so a slice's result never depends on what it is batched with.
            groups: dict[tuple[int, int, int, int], list[int]] = {}
            for i, image in enumerate(chunk):
                rows, cols = self.window(image.shape, tuple(x.shape[-2:]))
                groups.setdefault((rows.start, rows.stop, cols.start, cols.stop), []).append(i)
            for (top, bottom, left, right), members in groups.items():
                rows, cols = slice(top, bottom), slice(left, right)
                probs[members, :, rows, cols] = self.sigmoid(x[members][..., rows, cols], tta)
            for image, p in zip(chunk, probs, strict=True):
                out.append(from_model_grid(p[None], image.shape)[0].numpy())
        return out

    def physical_probabilities(
        self, images: list[np.ndarray], spacings: list[tuple[float, float]], tta: bool, batch_size: int
    ) -> list[np.ndarray]:
        """``probabilities`` for a physical contract: each image at the model's pixel size, padded to a multiple of
        2**depth, the result resampled back to the image's pixels. Images of one shape and pixel size are batched."""
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, (image, spacing) in enumerate(zip(images, spacings, strict=True)):
            groups.setdefault((np.shape(image), tuple(float(s) for s in spacing)), []).append(i)
        for (shape, spacing), members in groups.items():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                x = torch.cat([preprocess(images[i], self.model.preprocessing, spacing) for i in chunk])
                x, (rows, cols) = pad_to_multiple(x, 2**self.model.depth)
                p = self.tiled(x, tta)[..., rows, cols]
                p = F.interpolate(p, size=shape, mode="bilinear", align_corners=False)
                for i, probability in zip(chunk, p, strict=True):
                    out[i] = probability.numpy()
        return out

    def pixel_size(self, image: np.ndarray, spacing) -> tuple[tuple[float, float], str]:
        """``spacing`` as (row, column) mm and "given", or when it is None the estimate and "estimated"."""
        if spacing is not None:
            return (float(spacing[0]), float(spacing[1])), "given"
        size = estimate_pixel_size(self, np.asarray(image))
        return (size, size), "estimated"

    def mask(self, probabilities: np.ndarray, label: str) -> np.ndarray:
        """One label's mask from a (labels, H, W) result of ``probabilities``, with the model's thresholds."""
        probability = probabilities[self.labels.index(label)]
        return cut(probability, self.model.threshold, self.model.seed_thresholds.get(label))

    def window(self, shape: tuple[int, int], size: tuple[int, int]) -> tuple[slice, slice]:
        """The part of the model grid that holds an image of ``shape``, a multiple of 2**depth on each side."""
        return content_box(shape, size, 2**self.model.depth)

    def predict(self, image: np.ndarray | str | Path | Slice, spacing=None, tta: bool | None = None) -> Prediction:
        """Segment one slice (array, file path or ``Slice``).

        The pixel size (row, column mm): ``spacing`` when given, else the file's, else, for a model with a physical
        contract, estimated from the image (``hemseg.inference.scale``); the prediction says which it used.
        """
        source = "given" if spacing is not None else None
        if isinstance(image, (str, Path)):
            image = read_slice(image)
        if isinstance(image, Slice):
            if spacing is None and image.spacing is not None:
                spacing, source = image.spacing, "file"
            image = image.pixels
        image = np.asarray(image)
        if spacing is None and self.physical:
            spacing, source = self.pixel_size(image, None)
        spacing = None if spacing is None else (float(spacing[0]), float(spacing[1]))
        probs = self.probabilities([image], [spacing], tta=tta)[0]
        probabilities = dict(zip(self.labels, probs, strict=True))
        return Prediction(probabilities, self.model.threshold, spacing, dict(self.model.seed_thresholds), source)
