"""`python -m hemseg predict`: masks, overlays and a table of areas for image files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from hemseg.files import write_csv
from hemseg.inference import Segmenter, add_model_options
from hemseg.io import IMAGE_SUFFIXES, read_slice
from hemseg.overlay import overlay
from hemseg.volumes import NIFTI_SUFFIXES

INPUT_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm", *NIFTI_SUFFIXES)


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given, and the image files directly inside given folders (sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(INPUT_SUFFIXES)))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"no image files in {', '.join(paths)}")
    return files


def predict_files(segmenter: Segmenter, files: list[Path], out: Path) -> Path:
    """Write ``<stem>_<label>.png``, ``<stem>_overlay.png`` per input and ``predictions.csv``; return the CSV."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for file in files:
        image = read_slice(file)
        prediction = segmenter.predict(image)
        stem = image.name
        for label, mask in prediction.masks.items():
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{stem}_{label}.png")
        Image.fromarray(overlay(image.pixels, prediction.masks)).save(out / f"{stem}_overlay.png")
        row = {
            "file": str(file),
            "height": image.pixels.shape[0],
            "width": image.pixels.shape[1],
            "spacing_row": image.spacing[0] if image.spacing else "",
            "spacing_col": image.spacing[1] if image.spacing else "",
            "area_unit": prediction.area_unit,
        }
        for label in prediction.masks:
            row[f"{label}_count"] = prediction.count(label)
            row[f"{label}_area"] = round(prediction.area(label), 2)
        rows.append(row)
    return write_csv(out / "predictions.csv", rows)


def add_predict_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("predict", help="segment image files: masks, overlays and areas")
    parser.add_argument("inputs", nargs="+", metavar="FILES_OR_DIRS")
    parser.add_argument("--out", required=True, help="folder for masks, overlays and predictions.csv")
    add_model_options(parser)
    parser.set_defaults(command=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    files = expand_inputs(args.inputs)
    segmenter = Segmenter.load(args.model, precision=args.precision, tta=args.tta)
    table = predict_files(segmenter, files, Path(args.out))
    print(f"{len(files)} images segmented with {segmenter.source}; table: {table}")
    return 0
