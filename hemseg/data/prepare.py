"""`python -m hemseg prepare`: MRI volumes -> a slice folder with real vertebral-body masks and simulated lesions.

A slice folder holds, per slice, ``<stem>.png`` (lossless grayscale, 8 or 16 bit) and ``<stem>_<label>.png``
(0/255) for each label, plus ``manifest.csv`` (one row per slice) and ``dataset.json`` (labels, sources,
simulator version and parameters, seed, the lesions drawn per case).

Slices are whole: they show the vertebrae beyond the labelled ones (the sacrum, T11 or T12) without masks. The
manifest's ``labelled_from`` and ``labelled_to`` give the rows between which the vertebral bodies are labelled
(the superior-inferior extent of the labelled bodies plus a small margin): outside them a body in the image has no
mask, so training ignores the vertebral-body loss there and evaluation scores vertebral bodies only within them.
Axial slices outside that extent are not cut.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from hemseg.data.simulate import SIMULATOR_VERSION, SimulatorConfig, insert_hemangiomas
from hemseg.data.volumes import PLANE_AXIS, PLANES, cut, find_volumes, plane_spacing, read_volume, source_of
from hemseg.files import atomic_folder, write_csv
from hemseg.version import __version__

LABELS = ("vertebral_body", "hemangioma")
MANIFEST_COLUMNS = (
    "file",
    "case",
    "plane",
    "index",
    "spacing_row",
    "spacing_col",
    "split",
    "height",
    "width",
    "vertebral_body_px",
    "hemangioma_px",
    "labelled_from",
    "labelled_to",
)


@dataclass(frozen=True)
class SamplingConfig:
    """How many slices to cut per case and plane, and in what shares."""

    slices_per_plane: int = 24
    lesion_share: float = 0.5  # slices through a lesion, when the case has one
    background_share: float = 0.1  # slices through no vertebral body at all
    # Superior-inferior margin of the labelled extent around the labelled bodies: disc, not the next vertebra's
    # endplate, which can lie 5 mm beyond a labelled body (a thin disc at T12-L1 or L5-S1).
    label_margin_mm: float = 2.0
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test shares of the cases
    test_sources: tuple[str, ...] = ()  # sources held out whole as the test cases (``assign_splits``)
    # Lesion draws per training case, each written as its own slices (<case>_sim<k>_...): the shared set's 49
    # training cases hold 81 lesions in one draw, too few looks to learn from; the anatomy is real in every draw.
    # Validation and test cases keep their one draw, so their slices do not depend on this setting.
    train_simulations: int = 1
    # Share of typical (bright, textured) lesions in those further draws; None keeps the simulator's. Lower, it
    # shows a model more of the atypical looks it finds hardest, while the first draw keeps the simulator's mix.
    train_typical_share: float | None = None


def assign_splits(
    cases: list[str], shares: tuple[float, float, float], seed: int, test_sources: tuple[str, ...] = ()
) -> dict[str, str]:
    """Split case ids into train/val/test, deterministic by seed and stratified by source
    (``hemseg.data.volumes.source_of``), so every split mixes sources.

    ``test_sources``: every case of these sources is a test case, and the others are split into train and val in
    the shares' proportion: a source held out whole, as a new hospital's scans would be.
    """
    rng = np.random.default_rng(seed)
    by_source: dict[str, list[str]] = {}
    for case in sorted(cases):
        by_source.setdefault(source_of(case), []).append(case)
    unknown = sorted(set(test_sources) - set(by_source))
    if unknown:
        raise ValueError(f"no case of the held-out source(s) {unknown}; the sources are {sorted(by_source)}")
    if test_sources and set(by_source) <= set(test_sources):
        raise ValueError("every source is held out for testing: nothing is left to train on")
    splits = {}
    for source in sorted(by_source):
        members = [by_source[source][i] for i in rng.permutation(len(by_source[source]))]
        if source in test_sources:
            splits.update(dict.fromkeys(members, "test"))
            continue
        if test_sources:
            n_val, n_test = round(len(members) * shares[1] / (shares[0] + shares[1])), 0
        else:
            n_val, n_test = (round(len(members) * share) for share in shares[1:])
        for i, case in enumerate(members):
            splits[case] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return splits


def empty_splits_note(splits: dict[str, str], shares: tuple[float, float, float], held_out: bool) -> str:
    """A warning when a split with a share above 0 got no case (few cases: each source is split on its own and
    rounded), else ""."""
    names = ["train", "val"] if held_out else ["train", "val", "test"]
    empty = [name for name, share in zip(names, shares, strict=False) if share > 0 and name not in splits.values()]
    if not empty:
        return ""
    counts = {name: list(splits.values()).count(name) for name in ("train", "val", "test")}
    return (
        f"no case went to {' or '.join(empty)} ({', '.join(f'{n} {name}' for name, n in counts.items())}): each "
        "source is split on its own, and it has too few cases for these shares. Give more cases, or larger shares "
        "(--split 0.34,0.33,0.33 puts a third of each source in each split)"
    )


def spread(indices: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` evenly spaced members of a sorted index array (neighbouring slices are near copies)."""
    if count <= 0 or len(indices) == 0:
        return []
    picks = np.unique(np.linspace(0, len(indices) - 1, min(count, len(indices))).round().astype(int))
    return [int(indices[i]) for i in picks]


def choose_slices(body: np.ndarray, lesion: np.ndarray, plane: str, sampling: SamplingConfig) -> list[int]:
    """Slice indices across ``plane``: lesion slices, lesion-free body slices and no-vertebra slices."""
    axes = tuple(a for a in range(3) if a != PLANE_AXIS[plane])
    body_px, lesion_px = body.sum(axis=axes), lesion.sum(axis=axes)
    total = sampling.slices_per_plane
    n_background = round(total * sampling.background_share)
    with_lesion = spread(np.flatnonzero(lesion_px > 0), round(total * sampling.lesion_share))
    background = spread(np.flatnonzero(body_px == 0), n_background)
    body_only = spread(np.flatnonzero((body_px > 0) & (lesion_px == 0)), total - len(with_lesion) - len(background))
    chosen = with_lesion + background + body_only
    # Lesions through every body leave few lesion-free slices: the rest of the count from the other body slices.
    rest = np.setdiff1d(np.flatnonzero(body_px > 0), chosen)
    return sorted(chosen + spread(rest, total - len(chosen)))


def within_labelled_span(body: np.ndarray, spacing_z: float, margin_mm: float) -> slice:
    """The superior-inferior (RAS z) range of the labelled bodies, widened by ``margin_mm`` on each side."""
    labelled = np.flatnonzero(body.any(axis=(0, 1)))
    if len(labelled) == 0:
        return slice(0, body.shape[2])
    margin = round(margin_mm / spacing_z)
    return slice(max(0, int(labelled[0]) - margin), min(body.shape[2], int(labelled[-1]) + margin + 1))


def to_png_array(image: np.ndarray, source_dtype: np.dtype) -> np.ndarray:
    """8-bit for 8-bit sources, 16-bit otherwise (intensity range of the volume mapped onto 0..65535)."""
    if source_dtype == np.uint8:
        return np.rint(image).astype(np.uint8)
    return image.astype(np.uint16)


def _scale_to_uint16(volume: np.ndarray) -> np.ndarray:
    lo, hi = float(volume.min()), float(volume.max())
    return np.rint((volume - lo) / (hi - lo if hi > lo else 1.0) * 65535).astype(np.float32)


def prepare_case(
    case: str,
    image_path: Path,
    label_path: Path,
    out: Path,
    split: str,
    seed: int,
    simulator: SimulatorConfig,
    sampling: SamplingConfig,
    simulation: int = 0,
) -> tuple[list[dict], dict]:
    """Simulate lesions into one volume and write its slices; return manifest rows and the case's record.

    ``simulation`` k > 0: the k-th further lesion draw of the case, in files named ``<case>_sim<k>_...``.
    """
    volume = read_volume(image_path, label_path)
    # One generator per case and draw, seeded by the case id: a case looks the same whatever else is prepared
    # with it, and its first draw whatever the number of draws.
    rng = np.random.default_rng([seed, zlib.crc32(case.encode()), *([simulation] if simulation else [])])
    image, lesion, lesions = insert_hemangiomas(volume.image, volume.label, volume.spacing, rng, simulator)
    if volume.image.dtype != np.uint8:
        image = _scale_to_uint16(image)
    body = volume.label > 0
    z = within_labelled_span(body, volume.spacing[2], sampling.label_margin_mm)
    nz = body.shape[2]
    rows = []
    for plane in PLANES:
        row_mm, col_mm = plane_spacing(volume.spacing, plane)
        # Coronal and sagittal rows run superior to inferior: row r is RAS z = nz - 1 - r.
        labelled = (0, None) if plane == "axial" else (nz - z.stop, nz - z.start)
        # Axial slices outside the labelled extent would show an unlabelled body and nothing else to learn.
        within = (slice(None), slice(None), z) if plane == "axial" else (slice(None),) * 3
        for local in choose_slices(body[within], lesion[within], plane, sampling):
            index = local + z.start if plane == "axial" else local  # the slice number in the whole RAS volume
            stem = f"{case}{f'_sim{simulation}' if simulation else ''}_{plane}_{index:03d}"
            pixels = to_png_array(cut(image, plane, index), volume.image.dtype)
            masks = {"vertebral_body": cut(body, plane, index), "hemangioma": cut(lesion, plane, index)}
            Image.fromarray(np.ascontiguousarray(pixels)).save(out / f"{stem}.png")
            for name, mask in masks.items():
                Image.fromarray(np.ascontiguousarray(mask).astype(np.uint8) * 255).save(out / f"{stem}_{name}.png")
            rows.append(
                {
                    "file": f"{stem}.png",
                    "case": case,
                    "plane": plane,
                    "index": index,
                    "spacing_row": row_mm,
                    "spacing_col": col_mm,
                    "split": split,
                    "height": pixels.shape[0],
                    "width": pixels.shape[1],
                    "vertebral_body_px": int(masks["vertebral_body"].sum()),
                    "hemangioma_px": int(masks["hemangioma"].sum()),
                    "labelled_from": labelled[0],
                    "labelled_to": pixels.shape[0] if labelled[1] is None else labelled[1],
                }
            )
    record = {
        "image": str(image_path),
        "label": str(label_path),
        "split": split,
        "shape_ras": list(volume.image.shape),
        "spacing_mm": list(volume.spacing),
        "bit_depth": 8 if volume.image.dtype == np.uint8 else 16,
        "labelled_z": [z.start, z.stop],  # RAS z of the labelled extent (its margin included)
        "lesions": [asdict(lesion) for lesion in lesions],
    }
    return rows, record


def prepare(
    volumes: list[str | Path],
    out: str | Path,
    seed: int = 0,
    simulator: SimulatorConfig | None = None,
    sampling: SamplingConfig | None = None,
    overwrite: bool = False,
    workers: int = 1,
) -> Path:
    """Build a slice folder at ``out`` from NIfTI volumes and DICOM series; return its path.

    Everything is written to a temporary folder beside ``out`` and renamed when complete, so an interrupted run
    never leaves a folder that looks finished.
    """
    out = Path(out)
    simulator, sampling = simulator or SimulatorConfig(), sampling or SamplingConfig()
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists; choose another folder or pass --overwrite")
    found = find_volumes(volumes)
    unlabeled = [str(image) for _, image, label in found if label is None]
    if unlabeled:
        raise ValueError(
            "prepare needs a vertebral-body label for every volume, to place simulated lesions inside the bodies; "
            f"none found for: {', '.join(unlabeled)} (expected <case>_label.nii.gz beside it)"
        )
    splits = assign_splits([case for case, _, _ in found], sampling.split, seed, sampling.test_sources)
    further = simulator  # the simulator of the further training draws (k > 0)
    if sampling.train_typical_share is not None:
        further = replace(simulator, typical_share=sampling.train_typical_share)
    with atomic_folder(out) as tmp:
        jobs = [
            (case, image, label, tmp, splits[case], seed, further if k else simulator, sampling, k)
            for case, image, label in found
            for k in range(sampling.train_simulations if splits[case] == "train" else 1)
        ]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = list(pool.map(prepare_case, *zip(*jobs, strict=True)))
        else:
            results = [prepare_case(*job) for job in jobs]
        rows = [row for case_rows, _ in results for row in case_rows]
        write_csv(tmp / "manifest.csv", rows, list(MANIFEST_COLUMNS))
        description = {
            "name": out.name,
            "hemseg_version": __version__,
            "labels": {
                "vertebral_body": "real: the source volumes' vertebral-body label maps (label > 0)",
                "hemangioma": "simulated: inserted by hemseg.data.simulate, not real lesions",
            },
            "sources": sorted({str(Path(image).parent) for _, image, _ in found}),
            "seed": seed,
            "simulator": {"version": SIMULATOR_VERSION, "parameters": simulator.to_json()},
            "sampling": asdict(sampling),
            "orientation": "radiological: axial anterior up, coronal/sagittal superior up; patient right on the "
            "viewer's left (axial, coronal), anterior on the left (sagittal); index = slice number in the "
            "volume reoriented to RAS",
            "cases": case_records(jobs, results),
        }
        (tmp / "dataset.json").write_text(json.dumps(description, indent=1))
    return out


def case_records(jobs: list[tuple], results: list[tuple[list[dict], dict]]) -> dict[str, dict]:
    """dataset.json's record per case: its first lesion draw's, with the lesions of further draws under
    ``simulations`` (k = 1, 2, ...)."""
    records: dict[str, dict] = {}
    for (case, *_, simulation), (_, record) in zip(jobs, results, strict=True):
        if simulation == 0:
            records[case] = record
        else:
            records[case].setdefault("simulations", []).append(record["lesions"])
    return records


def add_prepare_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "prepare",
        help="MRI volumes -> slice folder with real vertebral-body masks and simulated hemangiomas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("volumes", nargs="+", metavar="VOLUMES", help="NIfTI files or folders, DICOM series folders")
    parser.add_argument("out", metavar="OUT", help="slice folder to create")
    parser.add_argument("--seed", type=int, default=0)
    defaults = SamplingConfig()
    parser.add_argument("--slices-per-plane", type=int, default=defaults.slices_per_plane)
    parser.add_argument("--lesion-share", type=float, default=defaults.lesion_share)
    parser.add_argument("--background-share", type=float, default=defaults.background_share)
    parser.add_argument(
        "--label-margin-mm",
        type=float,
        default=defaults.label_margin_mm,
        help="superior-inferior margin of the labelled extent around the labelled vertebral bodies",
    )
    parser.add_argument("--split", default=",".join(map(str, defaults.split)), help="train,val,test case shares")
    parser.add_argument(
        "--test-sources",
        default="",
        metavar="SOURCES",
        help="comma-separated sources (case id prefixes, e.g. vb2) held out whole as the test cases; the others are "
        "split into train and val",
    )
    parser.add_argument(
        "--train-simulations",
        type=int,
        default=defaults.train_simulations,
        help="lesion draws per training case, each cut into its own slices (validation and test keep one)",
    )
    parser.add_argument(
        "--train-typical-share",
        type=float,
        help="share of typical (bright, textured) lesions in the further training draws; default: the simulator's",
    )
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--preview", metavar="FILE.png", help="also draw sample slices with outlines")
    parser.set_defaults(command=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    shares = tuple(float(s) for s in args.split.split(","))
    if len(shares) != 3 or abs(sum(shares) - 1) > 1e-6:
        raise ValueError(f"--split needs three shares that add up to 1, got {args.split!r}")
    if args.train_simulations < 1:
        raise ValueError(f"--train-simulations must be at least 1, got {args.train_simulations}")
    if args.train_typical_share is not None and not 0 <= args.train_typical_share <= 1:
        raise ValueError(f"--train-typical-share must be between 0 and 1, got {args.train_typical_share}")
    sampling = SamplingConfig(
        slices_per_plane=args.slices_per_plane,
        lesion_share=args.lesion_share,
        background_share=args.background_share,
        label_margin_mm=args.label_margin_mm,
        split=shares,
        test_sources=tuple(source for source in args.test_sources.split(",") if source),
        train_simulations=args.train_simulations,
        train_typical_share=args.train_typical_share,
    )
    out = prepare(args.volumes, args.out, args.seed, SimulatorConfig(), sampling, args.overwrite, args.workers)
    with open(out / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    splits = {row["case"]: row["split"] for row in rows}
    if note := empty_splits_note(splits, shares, bool(sampling.test_sources)):
        print(f"warning: {note}", file=sys.stderr)
    with_lesion = sum(int(r["hemangioma_px"]) > 0 for r in rows)
    print(
        f"wrote {len(rows)} slices ({with_lesion} with a simulated lesion) from {len({r['case'] for r in rows})} "
        f"cases to {out}"
    )
    if args.preview:
        from hemseg.data.preview import draw_preview

        print(f"preview: {draw_preview(out, args.preview)}")
    return 0
