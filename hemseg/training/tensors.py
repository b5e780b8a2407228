"""The whole data set preprocessed once into tensors that stay resident on the training device."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from hemseg.data.volumes import PLANES
from hemseg.preprocessing import preprocess, to_model_grid
from hemseg.speed import cpu_cores

LOAD_CHUNK = 64  # slices per read in load_tensors
IMAGE_DTYPE, MASK_DTYPE = torch.float16, torch.uint8  # of the resident tensors: half the memory of float32 images


@dataclass
class SliceTensors:
    """A whole data set preprocessed once: it then stays resident on the training device."""

    images: torch.Tensor  # (N, 1, S, S) float16 in [0, 1]
    masks: torch.Tensor  # (N, labels, S, S) uint8 in {0, 1}
    planes: torch.Tensor  # (N,) index into PLANES
    splits: np.ndarray  # (N,) "train" / "val" / "test"

    def to(self, device: torch.device) -> SliceTensors:
        return SliceTensors(self.images.to(device), self.masks.to(device), self.planes.to(device), self.splits)

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float images, float masks and planes of the slices ``idx`` on ``device``; copied there only when the set
        is kept in host memory (``resident_device``)."""
        idx = idx.to(self.images.device)
        images, masks = self.images[idx].to(device).float(), self.masks[idx].to(device).float()
        return images, masks, self.planes[idx].to(device)


def slice_bytes(count: int, labels: int, size: int) -> int:
    """Memory of ``count`` preprocessed slices on a ``size`` grid: a float16 image and a uint8 mask per label."""
    return count * size * size * (IMAGE_DTYPE.itemsize + labels * MASK_DTYPE.itemsize)


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
    dataset: datasets.Dataset, labels: list[str], preprocessing: dict, progress: bool = True, threads: int | None = None
) -> SliceTensors:
    """Preprocess every slice of ``dataset`` with the model's own contract (``hemseg.preprocessing.preprocess``).

    Filled in place: collecting per-slice tensors and concatenating them would hold the data set twice at the peak
    (4.6 GB instead of 2.3 for 15,675 slices on a 192 grid). Chunks of slices are read and preprocessed by
    ``threads`` threads (default: one per CPU core, at most 8): PNG decoding and torch's resizing release the GIL,
    so 2,556 slices took 2.8-3.7 s with 2 threads against 3.2-5.1 s with one on a 2-core machine (docs/training.md).
    """
    size = tuple(preprocessing["size"])
    images = torch.empty(len(dataset), 1, *size, dtype=IMAGE_DTYPE)
    masks = torch.empty(len(dataset), len(labels), *size, dtype=MASK_DTYPE)
    rows = dataset.select_columns(["image", *labels]).with_format("numpy")

    def fill(start: int) -> int:
        chunk = rows[start : start + LOAD_CHUNK]  # one read per chunk: datasets' per-row overhead is ~1 ms
        for j, image in enumerate(chunk["image"]):
            images[start + j] = preprocess(image, preprocessing)[0]
            stacked = torch.from_numpy(np.stack([chunk[label][j] > 0 for label in labels]).astype(np.uint8))
            masks[start + j] = to_model_grid(stacked[None], size, mode="nearest")[0]
        return len(chunk["image"])

    bar = tqdm(total=len(dataset), desc="preprocessing", disable=not progress)
    with ThreadPoolExecutor(threads or min(8, cpu_cores())) as pool, bar:
        for done in pool.map(fill, range(0, len(dataset), LOAD_CHUNK)):
            bar.update(done)
    plane_names = dataset.features["plane"].names
    planes = torch.tensor([PLANES.index(plane_names[p]) for p in dataset["plane"]])
    return SliceTensors(images, masks, planes, np.asarray(dataset["split"]))
