"""The whole data set preprocessed once into tensors that stay resident on the training device.

Beside images and masks, a region map per slice says what can be scored where (``REGION_*``): outside the image
(the padding of a square grid or of a canvas) nothing is, and outside the labelled rows only the labels that are
drawn everywhere (``hemseg.data.prepare.EXTENT_LABELS`` are not).
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from hemseg.data.dataset import EXTENT_LABELS
from hemseg.data.volumes import PLANES
from hemseg.preprocessing import physical, preprocess, to_model_grid, to_spacing
from hemseg.speed import cpu_cores

LOAD_CHUNK = 64  # slices per read in load_tensors
IMAGE_DTYPE, MASK_DTYPE = torch.float16, torch.uint8  # of the resident tensors: half the memory of float32 images
REGION_OUTSIDE, REGION_IMAGE, REGION_LABELLED = 0, 1, 2  # padding; image; image within the labelled rows


@dataclass
class SliceTensors:
    """A whole data set preprocessed once: it then stays resident on the training device."""

    images: torch.Tensor  # (N, 1, S, S) float16 in [0, 1]
    masks: torch.Tensor  # (N, labels, S, S) uint8 in {0, 1}
    regions: torch.Tensor  # (N, 1, S, S) uint8 REGION_*
    planes: torch.Tensor  # (N,) index into PLANES
    splits: np.ndarray  # (N,) "train" / "val" / "test"
    labels: list[str]  # of the mask channels

    def to(self, device: torch.device) -> SliceTensors:
        moved = (self.images, self.masks, self.regions, self.planes)
        return SliceTensors(*(tensor.to(device) for tensor in moved), self.splits, self.labels)

    def batch(
        self, idx: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float images, float masks, float loss weights (``label_weights``) and planes of the slices ``idx`` on
        ``device``; copied there only when the set is kept in host memory (``resident_device``)."""
        idx = idx.to(self.images.device)
        images, masks = self.images[idx].to(device).float(), self.masks[idx].to(device).float()
        return images, masks, label_weights(self.regions[idx].to(device), self.labels), self.planes[idx].to(device)


def label_weights(regions: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """(B, labels, H, W) float weights from (B, 1, H, W) regions: 1 where a label is scored, 0 where ignored."""
    scored = [regions >= (REGION_LABELLED if label in EXTENT_LABELS else REGION_IMAGE) for label in labels]
    return torch.cat(scored, dim=1).float()


def slice_bytes(count: int, labels: int, size: int) -> int:
    """Memory of ``count`` preprocessed slices on a ``size`` grid: a float16 image, a uint8 mask per label and a
    uint8 region map."""
    return count * size * size * (IMAGE_DTYPE.itemsize + (labels + 1) * MASK_DTYPE.itemsize)


def canvas_side(dataset: datasets.Dataset, preprocessing: dict, multiple: int) -> int:
    """The square side, a multiple of ``multiple``, that holds every slice at the contract's pixel size (the
    longest side of any slice there, from the manifest's sizes)."""
    if not physical(preprocessing):
        return int(preprocessing["size"][0])
    target = preprocessing["spacing_mm"]
    longest = 0
    for (row_mm, col_mm), shape in zip(dataset["spacing"], image_shapes(dataset), strict=True):
        longest = max(longest, round(shape[0] * row_mm / target), round(shape[1] * col_mm / target))
    return -(-longest // multiple) * multiple


def image_shapes(dataset: datasets.Dataset) -> list[tuple[int, int]]:
    """Each slice's (height, width), read from the image headers (no pixel decoding)."""
    shapes = []
    for image in dataset.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))["image"]:
        with Image.open(io.BytesIO(image["bytes"])) if image["bytes"] else Image.open(image["path"]) as opened:
            shapes.append((opened.height, opened.width))
    return shapes


def on_model_grid(
    image: np.ndarray, masks: np.ndarray, rows: tuple[int, int], spacing, preprocessing: dict, side: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One slice as training holds it: (1, S, S) image, (labels, S, S) masks and (1, S, S) regions, by the
    contract (a square grid, or the model's pixel size centred on a canvas of side ``side``)."""
    height = image.shape[0]
    region = np.full((1, *image.shape), REGION_IMAGE, np.uint8)
    region[:, rows[0] : rows[1]] = REGION_LABELLED
    stacked = torch.from_numpy(np.concatenate([masks, region]))[None]
    x = preprocess(image, preprocessing, spacing)
    if not physical(preprocessing):
        size = tuple(preprocessing["size"])
        on_grid = to_model_grid(stacked, size, mode="nearest")[0]
        return x[0], on_grid[:-1], on_grid[-1:]
    stacked = to_spacing(stacked, spacing, preprocessing["spacing_mm"], mode="nearest")
    h, w = x.shape[-2:]
    if max(h, w) > side:
        raise ValueError(f"a slice of {height} rows is {h} x {w} pixels at the model's pixel size: over {side}")
    top, left = (side - h) // 2, (side - w) // 2
    padding = [left, side - w - left, top, side - h - top]
    return F.pad(x, padding)[0], F.pad(stacked, padding)[0, :-1], F.pad(stacked, padding)[0, -1:]


def available_memory() -> int | None:
    """Bytes of host memory available to new allocations (Linux's MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_host_memory(needed: int, processes: int = 1) -> None:
    """Refuse, with the numbers, a data set whose preprocessed tensors (one copy per process on this machine)
    would not fit in the memory available, instead of running out of memory while they are filled."""
    available = available_memory()
    if available is not None and needed * processes > available:
        copies = f" x {processes} processes on this machine" if processes > 1 else ""
        raise ValueError(
            f"the preprocessed slices need {needed / 2**30:.1f} GiB{copies}, but only {available / 2**30:.1f} GiB "
            "of memory is available: train on a smaller model.image_size, on fewer slices or in fewer processes"
        )


def resident_device(needed: int, device: torch.device) -> torch.device:
    """Where the preprocessed set stays: on the training device when it takes at most half of its free memory
    (the rest is for the model, its activations and the optimiser), else in host memory, a batch copied at a time."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if needed <= free // 2 else torch.device("cpu")


def load_tensors(
    dataset: datasets.Dataset,
    labels: list[str],
    preprocessing: dict,
    progress: bool = True,
    threads: int | None = None,
    side: int | None = None,
) -> SliceTensors:
    """Preprocess every slice of ``dataset`` with the model's own contract (``hemseg.preprocessing.preprocess``):
    on the square grid, or at the model's pixel size on a canvas of ``side`` (default: ``canvas_side`` with
    multiples of 16).

    Filled in place: collecting per-slice tensors and concatenating them would hold the data set twice at the peak
    (4.6 GB instead of 2.3 for 15,675 slices on a 192 grid). Chunks of slices are read and preprocessed by
    ``threads`` threads (default: one per CPU core, at most 8): PNG decoding and torch's resizing release the GIL,
    so 2,556 slices took 2.8-3.7 s with 2 threads against 3.2-5.1 s with one on a 2-core machine (docs/training.md).
    """
    side = side or canvas_side(dataset, preprocessing, 16)
    images = torch.empty(len(dataset), 1, side, side, dtype=IMAGE_DTYPE)
    masks = torch.empty(len(dataset), len(labels), side, side, dtype=MASK_DTYPE)
    regions = torch.empty(len(dataset), 1, side, side, dtype=MASK_DTYPE)
    columns = ["image", "spacing", *labels, *(["labelled_rows"] if "labelled_rows" in dataset.features else [])]
    rows = dataset.select_columns(columns).with_format("numpy")

    def fill(start: int) -> int:
        chunk = rows[start : start + LOAD_CHUNK]  # one read per chunk: datasets' per-row overhead is ~1 ms
        for j, image in enumerate(chunk["image"]):
            truth = np.stack([chunk[label][j] > 0 for label in labels]).astype(np.uint8)
            labelled = chunk["labelled_rows"][j] if "labelled_rows" in chunk else (0, image.shape[0])
            spacing = tuple(float(v) for v in chunk["spacing"][j])
            held = on_model_grid(image, truth, tuple(labelled), spacing, preprocessing, side)
            images[start + j], masks[start + j], regions[start + j] = held
        return len(chunk["image"])

    bar = tqdm(total=len(dataset), desc="preprocessing", disable=not progress)
    with ThreadPoolExecutor(threads or min(8, cpu_cores())) as pool, bar:
        for done in pool.map(fill, range(0, len(dataset), LOAD_CHUNK)):
            bar.update(done)
    plane_names = dataset.features["plane"].names
    planes = torch.tensor([PLANES.index(plane_names[p]) for p in dataset["plane"]])
    return SliceTensors(images, masks, regions, planes, np.asarray(dataset["split"]), list(labels))
