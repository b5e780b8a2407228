"""`python -m hemseg predict`: masks, overlays and a table of areas for image files."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from hemseg.data.images import IMAGE_SUFFIXES, read_frames
from hemseg.data.volumes import NIFTI_SUFFIXES, file_stem
from hemseg.files import clear_partials, replace_file, write_csv, write_failure
from hemseg.inference.overlay import overlay
from hemseg.inference.segmenter import Prediction, Segmenter, add_model_options

INPUT_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm", *NIFTI_SUFFIXES)
READ_FAILURES = (ValueError, OSError)  # what read_frames and predict raise for a file they cannot use


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given, and the image files directly inside given folders (sorted): those with an image suffix and
    DICOM files without one (as scanners export them, ``IM0001``); hidden files (``.DS_Store``, macOS ``._*``) are
    not images."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and _is_input(p)))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    if not files:
        raise ValueError(f"no image files in {', '.join(paths)}")
    return files


def _is_input(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    return path.name.lower().endswith(INPUT_SUFFIXES) or (not path.suffix and pydicom.misc.is_dicom(path))


def output_stems(files: list[Path]) -> list[str]:
    """One output name per input: its stem, with ``-2``, ``-3``... for later inputs of the same stem (``a/x.png``
    and ``b/x.png``, ``x.png`` and ``x.dcm``), so no input's masks overwrite another's."""
    seen: dict[str, int] = {}
    stems = []
    for file in files:
        stem = file_stem(file)
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def predict_files(
    segmenter: Segmenter, files: list[Path], out: Path, pixel_size: float | None = None
) -> tuple[Path, list[str]]:
    """Write ``<stem>_<label>.png`` and ``<stem>_overlay.png`` per input and ``predictions.csv``, one row per input
    (``output`` names its files; ``error`` says why a file was skipped), and per frame of a multi-frame DICOM
    (``<stem>_f001``..., its number in ``frame``). Returns the table and the errors: a file
    that cannot be read is skipped, and the others are still segmented.

    ``pixel_size`` (mm, square pixels) overrides every file's own; each row says the pixel size used and where it
    came from (``given``, the ``file``, or ``estimated`` by a model with a physical contract).

    Every file is written whole or not at all. A full disk or Ctrl-C stops the batch: the table then lists the
    inputs done so far (or, when not even it can be written, an earlier run's table is removed rather than left
    beside new files), and the error says how far the batch got.
    """
    out.mkdir(parents=True, exist_ok=True)
    clear_partials(out)
    rows, errors, done = [], [], 0
    given = None if pixel_size is None else (pixel_size, pixel_size)
    try:
        for file, stem in zip(files, output_stems(files), strict=True):
            try:
                images = read_frames(file)
                predictions = [segmenter.predict(image, given) for image in images]
            except READ_FAILURES as err:
                reason = str(err).removeprefix(f"{file}: ").removeprefix(f"{file.name}: ")  # the row names the file
                errors.append(f"{file}: {reason}")
                rows.append({"file": str(file), "frame": "", "output": stem, "error": reason})
                done += 1
                continue
            for k, (image, prediction) in enumerate(zip(images, predictions, strict=True), start=1):
                # A multi-frame DICOM: a row and a set of files per frame, <stem>_f001 on.
                name, frame = (stem, "") if len(images) == 1 else (f"{stem}_f{k:03d}", k)
                write_outputs(out, name, image.pixels, prediction)
                row = {"file": str(file), "frame": frame, "output": name}
                rows.append(row | describe(image.pixels, prediction) | {"error": ""})
            done += 1
    except (OSError, KeyboardInterrupt) as err:
        progress = f"{done} of {len(files)} inputs done; {stop_table(out, rows)}"
        if isinstance(err, KeyboardInterrupt):
            raise KeyboardInterrupt(progress) from None
        raise OSError(f"{write_failure(err, Path(err.filename or out))}; {progress}") from err
    return write_csv(out / "predictions.csv", rows), errors


def write_outputs(out: Path, stem: str, pixels: np.ndarray, prediction: Prediction) -> None:
    pictures = {f"{stem}_{label}.png": mask.astype(np.uint8) * 255 for label, mask in prediction.masks.items()}
    pictures[f"{stem}_overlay.png"] = overlay(pixels, prediction.masks)
    for name, picture in pictures.items():
        try:
            with replace_file(out / name) as tmp:
                Image.fromarray(picture).save(tmp, format="PNG")
        except OSError as err:
            err.filename = err.filename or str(out / name)  # Pillow's write errors name no file
            raise


def describe(pixels: np.ndarray, prediction: Prediction) -> dict:
    """One input's row of the table: its size, the pixel size used and where it came from, and per label the
    number of components and the area."""
    spacing = prediction.spacing
    row = {
        "height": pixels.shape[0],
        "width": pixels.shape[1],
        "spacing_row": round(spacing[0], 4) if spacing else "",
        "spacing_col": round(spacing[1], 4) if spacing else "",
        "spacing_source": prediction.spacing_source or "",
        "area_unit": prediction.area_unit,
    }
    for label in prediction.masks:
        row[f"{label}_count"] = prediction.count(label)
        row[f"{label}_area"] = round(prediction.area(label), 2)
    return row


def stop_table(out: Path, rows: list[dict]) -> str:
    """The table of a stopped batch's inputs done so far; what became of it, in words."""
    table = out / "predictions.csv"
    try:
        write_csv(table, rows)
    except OSError:
        table.unlink(missing_ok=True)  # a full disk still allows a removal
        return f"{table} could not be written (an earlier one there was removed)"
    return f"{table} lists them"


def add_predict_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("predict", help="segment image files: masks, overlays and areas")
    parser.add_argument("inputs", nargs="+", metavar="FILES_OR_DIRS")
    parser.add_argument("--out", required=True, help="folder for masks, overlays and predictions.csv")
    parser.add_argument(
        "--pixel-size",
        type=float,
        metavar="MM",
        help="the images' pixel size in mm, over what the files say (a model with a physical contract estimates it "
        "for files that say nothing, such as PNG)",
    )
    add_model_options(parser)
    parser.set_defaults(command=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """0 when every input was segmented; 1 when some could not be read (each named on stderr, the rest done)."""
    if args.pixel_size is not None and not (math.isfinite(args.pixel_size) and args.pixel_size > 0):
        raise ValueError(f"--pixel-size must be a number of mm above 0, got {args.pixel_size}")
    files = expand_inputs(args.inputs)
    segmenter = Segmenter.load(args.model, precision=args.precision, tta=args.tta)
    table, errors = predict_files(segmenter, files, Path(args.out), args.pixel_size)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    skipped = f"; {len(errors)} skipped (see the error column)" if errors else ""
    print(f"{len(files) - len(errors)} images segmented with {segmenter.source}{skipped}; table: {table}")
    return 1 if errors else 0
