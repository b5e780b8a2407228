"""Real files for the tests: small NIfTI volumes and DICOM series written here, and the shared data set."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

# The Hub cannot be reached from CI: every Hub path is exercised offline. Set before any Hub library loads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from hemseg.lab.hostile import dicom_slice  # noqa: F401 - the tests' DICOM slices, as the stress campaign's
from hemseg.lab.stress import free_port, wait_until_serving

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "spine-mri"
RAS_SHAPE = (40, 48, 72)  # x: left->right, y: posterior->anterior, z: inferior->superior


def synthetic_ras(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 'spine' in RAS order: three box-shaped vertebral bodies stacked along z, ids 1-3."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 4, RAS_SHAPE)
    label = np.zeros(RAS_SHAPE, dtype=np.uint8)
    for vid, z0 in enumerate((8, 30, 52), start=1):
        label[10:30, 16:40, z0 : z0 + 14] = vid
    image[label > 0] += 60
    image[:, 44:, :] += 50  # a bright band at the anterior edge: tells anterior from posterior
    image[:, :, 68:] += 100  # and one at the superior end
    return np.clip(image, 0, 255).astype(np.uint8), label


def save_nifti(array: np.ndarray, path: Path, codes=("I", "P", "R"), spacing=(1.0, 1.0, 1.0)) -> Path:
    """Save a RAS array stored in another axis order, with an affine that says so."""
    ras = nib.Nifti1Image(array, np.diag([*spacing, 1.0]))
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(codes)
    )
    nib.save(ras.as_reoriented(transform), path)
    return path


def write_case(folder: Path, case: str, seed: int = 0, codes=("I", "P", "R")) -> Path:
    image, label = synthetic_ras(seed)
    save_nifti(image, folder / f"{case}_image.nii.gz", codes)
    save_nifti(label, folder / f"{case}_label.nii.gz", codes)
    return folder / f"{case}_image.nii.gz"


def write_dicom_series(volume_ras: np.ndarray, folder: Path, slope: float = 2.0, intercept: float = -10.0) -> Path:
    """Axial DICOM slices of a RAS volume with 1 mm voxels; stored pixel = (value - intercept) / slope.

    File names are shuffled so that only ImagePositionPatient can order the slices.
    """
    folder.mkdir(parents=True)
    nx, ny, nz = volume_ras.shape
    series_uid = generate_uid()
    order = np.random.default_rng(0).permutation(nz)
    for k in range(nz):
        # DICOM rows run anterior->posterior (+y in LPS), columns right->left (+x in LPS).
        pixels = volume_ras[::-1, ::-1, k].T
        stored = np.rint((pixels.astype(float) - intercept) / slope).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"x{order[k]:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "MR", series_uid, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        # Voxel (i, j, k) in RAS is at (i, j, k) mm; in LPS the first pixel (i = nx-1, j = ny-1) is at:
        ds.ImagePositionPatient = [-(nx - 1.0), -(ny - 1.0), float(k)]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 1.0
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"x{order[k]:03d}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture
def nifti_cases(tmp_path: Path) -> Path:
    """A folder with two synthetic NIfTI cases from two 'sources'."""
    folder = tmp_path / "volumes"
    folder.mkdir()
    write_case(folder, "srca_01", seed=1)
    write_case(folder, "srcb_01", seed=2, codes=("L", "A", "S"))
    return folder


@pytest.fixture
def shared_case() -> Path:
    """The smallest shared case (real MRI, real vertebral-body labels)."""
    path = SHARED / "vb3_04_image.nii.gz"
    if not path.exists():
        pytest.skip(f"shared data not found at {SHARED}")
    return path


@pytest.fixture(scope="session")
def tiny_slices(tmp_path_factory) -> Path:
    """A small slice folder: 8 synthetic cases from two sources, train/val/test 4/2/2 cases, 4 slices a plane."""
    from hemseg.data.prepare import SamplingConfig, prepare

    folder = tmp_path_factory.mktemp("volumes")
    for i in range(4):
        write_case(folder, f"srca_{i:02d}", seed=10 + i)
        write_case(folder, f"srcb_{i:02d}", seed=20 + i, codes=("L", "A", "S"))
    sampling = SamplingConfig(slices_per_plane=4, split=(0.5, 0.25, 0.25))
    return prepare([folder], tmp_path_factory.mktemp("data") / "slices", seed=0, sampling=sampling)


def run(args: list[str], launcher=(sys.executable,), env=None, check=True) -> subprocess.CompletedProcess:
    """``launcher`` + ``args`` in the repository, as a user would type them; output captured as text."""
    return subprocess.run(
        [*launcher, *args], cwd=REPO, capture_output=True, text=True, check=check, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="session")
def trained_model(tiny_slices, tmp_path_factory) -> Path:
    """A model folder from a one-epoch run of train.py (one process)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run(["train.py", *one_epoch(tiny_slices, out)])
    return out


REPO = Path(__file__).resolve().parents[1]
TINY_TRAINING = ["--set", "model.base_channels=4", "--set", "model.depth=3", "--batch-size", "8", "--lr", "3e-3"]


def one_epoch(data: Path, out: Path) -> list[str]:
    """train.py arguments for one epoch of the tiny network on ``data``, writing ``out``."""
    return [*TINY_TRAINING, "--epochs", "1", "--data", str(data), "--output-dir", str(out)]


EXAMPLES = REPO / "examples"
EXAMPLE = EXAMPLES / "vb2_07_sagittal_042.png"


@pytest.fixture
def small_disk(tmp_path):
    """A function giving a real file system of the size asked ("512k"), to fill: a tmpfs mounted for the test
    (CI's container runs as root; elsewhere the test is skipped, saying why)."""
    mounts = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"a tmpfs cannot be mounted here: {done.stderr.decode().strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def whole_outputs(folder: Path) -> list[Path]:
    """Every file under ``folder``, each checked to be whole: PNGs decode to the end, CSVs parse; no half-written
    temporary file is left."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if ".partial-" in p.name], "a half-written file was left behind"
    for path in files:
        if path.suffix == ".png":
            Image.open(path).load()
        elif path.suffix == ".csv":
            list(csv.DictReader(path.open()))
    return files


@pytest.fixture(scope="session")
def server(trained_model):
    """`python app.py` on a free localhost port, serving the tiny trained model."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HEMSEG_MODEL": str(trained_model), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(process, url, 120, process.stdout.read)
    except RuntimeError as err:
        pytest.fail(f"app.py: {err}")
    yield url
    process.terminate()
    process.wait(timeout=30)
