"""Loading prepared data as a Hugging Face ``datasets.Dataset``.

``load`` takes a slice folder (``manifest.csv`` + PNGs, the project's interchange format), a folder written by
``Dataset.save_to_disk`` or a Hub data set id. The result is Arrow-backed and memory-mapped, so data larger than
RAM work; ``save_to_disk`` and ``push_to_hub`` on it store or share a prepared set.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
from PIL import Image, UnidentifiedImageError

from hemseg.data.volumes import PLANES
from hemseg.hub import is_path_not_hub_id

DATA_HELP = "slice folder, saved data set folder or Hub data set id"
REQUIRED_COLUMNS = ("file", "case", "plane", "index", "spacing_row", "spacing_col", "split")
EXTENT_LABELS = ("vertebral_body",)  # labelled only within the labelled rows (``labelled_rows``); the others everywhere


def features(labels: list[str]) -> datasets.Features:
    return datasets.Features(
        {
            "file": datasets.Value("string"),
            "image": datasets.Image(),
            **{label: datasets.Image() for label in labels},
            "plane": datasets.ClassLabel(names=list(PLANES)),
            "case": datasets.Value("string"),
            "index": datasets.Value("int32"),
            "spacing": datasets.List(datasets.Value("float32"), length=2),
            "split": datasets.Value("string"),
            "labelled_rows": datasets.List(datasets.Value("int32"), length=2),
        }
    )


def _read_png(path: Path) -> tuple[bytes, np.ndarray]:
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            return data, np.asarray(image)
    except FileNotFoundError as err:
        raise ValueError(f"{path}: listed in manifest.csv but missing") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err


def _rows(folder: Path) -> list[dict[str, str]]:
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        raise ValueError(f"{folder}: not a slice folder (no manifest.csv)")
    with open(manifest, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{manifest}: missing columns {missing}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{manifest}: lists no slices")
    bad_planes = {r["plane"] for r in rows} - set(PLANES)
    if bad_planes:
        raise ValueError(f"{manifest}: unknown planes {sorted(bad_planes)}; expected {list(PLANES)}")
    return rows


def folder_labels(folder: Path) -> list[str]:
    """Label names of a slice folder, from its dataset.json."""
    path = folder / "dataset.json"
    if not path.exists():
        raise ValueError(f"{folder}: no dataset.json naming the labels")
    try:
        return list(json.loads(path.read_text())["labels"])
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path}: not a valid dataset.json ({err})") from err


def _slices(folder: str, labels: str, signature: str) -> Iterator[dict]:
    """Yield validated examples; ``signature`` only keys the Arrow cache to the folder's contents.

    ``labels`` is comma-separated: ``from_generator`` would split a list argument into shards.
    """
    root = Path(folder)
    for row in _rows(root):
        image_bytes, image = _read_png(root / row["file"])
        if image.ndim != 2:
            raise ValueError(f"{root / row['file']}: expected a grayscale image, found shape {image.shape}")
        example = {
            "file": row["file"],
            "image": {"bytes": image_bytes, "path": row["file"]},
            "plane": row["plane"],
            "case": row["case"],
            "index": int(row["index"]),
            "spacing": [float(row["spacing_row"]), float(row["spacing_col"])],
            "split": row["split"],
            # Folders from before whole slices were labelled on every row they kept.
            "labelled_rows": [int(row.get("labelled_from") or 0), int(row.get("labelled_to") or image.shape[0])],
        }
        stem = row["file"].removesuffix(".png")
        for label in labels.split(","):
            path = root / f"{stem}_{label}.png"
            mask_bytes, mask = _read_png(path)
            if mask.shape != image.shape:
                raise ValueError(f"{path}: mask size {mask.shape} differs from its image {image.shape}")
            if not np.isin(mask, (0, 255)).all():
                raise ValueError(f"{path}: mask is not binary (values other than 0 and 255)")
            example[label] = {"bytes": mask_bytes, "path": path.name}
        yield example


def _signature(folder: Path, rows: list[dict[str, str]], labels: list[str]) -> str:
    """Digest of the manifest, dataset.json and the size and time of every listed file (missing ones included)."""
    digest = hashlib.sha256()
    for name in ("manifest.csv", "dataset.json"):
        digest.update((folder / name).read_bytes())
    for row in rows:
        stem = row["file"].removesuffix(".png")
        for name in (row["file"], *(f"{stem}_{label}.png" for label in labels)):
            try:
                stat = (folder / name).stat()
                digest.update(f"{name}{stat.st_size}{stat.st_mtime_ns}".encode())
            except FileNotFoundError:
                digest.update(f"{name} missing".encode())  # the generator names it
    return digest.hexdigest()


def load_slice_folder(folder: str | Path) -> datasets.Dataset:
    """A slice folder as a memory-mapped Dataset; every image and mask is checked on the way in."""
    folder = Path(folder)
    labels = folder_labels(folder)
    signature = _signature(folder, _rows(folder), labels)
    try:
        return datasets.Dataset.from_generator(
            _slices,
            features=features(labels),
            gen_kwargs={"folder": str(folder.resolve()), "labels": ",".join(labels), "signature": signature},
        )
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__
        raise (cause if isinstance(cause, ValueError) else ValueError(f"{folder}: {err}")) from err


def load(source: str | Path) -> datasets.Dataset:
    """A slice folder, a ``save_to_disk`` folder or a Hub data set id as a ``datasets.Dataset``.

    Columns: ``image`` and one mask per label (``datasets.Image``; masks 0/255), ``plane`` (ClassLabel
    axial/coronal/sagittal), ``case``, ``index``, ``spacing`` ([row, col] mm), ``split``, ``file`` and
    ``labelled_rows`` ([first, end) rows where the vertebral bodies are labelled; see ``hemseg.data.prepare``).
    """
    path = Path(source)
    if path.is_dir():
        if (path / "manifest.csv").exists():
            return load_slice_folder(path)
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return datasets.load_from_disk(str(path))
        raise ValueError(f"{path}: neither a slice folder (manifest.csv) nor a data set saved with save_to_disk")
    if path.exists():
        raise ValueError(f"{path}: a file; expected a slice folder, a saved data set folder or a Hub data set id")
    if is_path_not_hub_id(str(source)):
        raise FileNotFoundError(f"{source}: no such folder")
    try:
        return datasets.load_dataset(str(source), split="train")
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise ValueError(f"could not load the Hub data set {source!r} (offline, private or misspelt?): {err}") from err


def label_names(dataset: datasets.Dataset) -> list[str]:
    """The mask columns of a loaded data set, in order."""
    return [
        name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image) and name != "image"
    ]


def labelled_rows(batch: dict, i: int) -> slice:
    """The rows of slice ``i`` of a batch (columns of a loaded data set) where the vertebral bodies are labelled:
    all of them for data sets made before whole slices."""
    if "labelled_rows" not in batch:
        return slice(None)
    first, end = (int(v) for v in batch["labelled_rows"][i])
    return slice(first, end)


def select_split(dataset: datasets.Dataset, split: str | None) -> datasets.Dataset:
    """The slices of one split (None or "all": every slice); a ValueError when there are none."""
    if split in (None, "all"):
        return dataset
    selected = dataset.filter(lambda s: s == split, input_columns="split")
    if len(selected) == 0:
        raise ValueError(f"the data set has no {split!r} slices")
    return selected


def add_data_options(parser: argparse.ArgumentParser, split: str, data_help: str = DATA_HELP) -> None:
    """--data and --split (default ``split``; 'all' for every slice), for the commands that score one split."""
    parser.add_argument("--data", required=True, help=data_help)
    parser.add_argument("--split", default=split, help="train, val or test; 'all' for every slice")
