import csv
import http.server
import math
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from conftest import EXAMPLE, one_epoch, run
from huggingface_hub.errors import OfflineModeIsEnabled
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from hemseg import Segmenter
from hemseg.evaluate import contrast_table, source_table, write_report
from hemseg.hub import push_folder
from hemseg.inference import parse_model_spec
from hemseg.io import read_slice
from hemseg.metrics import contrast_to_noise, slice_metrics
from hemseg.transforms import from_model_grid, preprocess
from hemseg.volumes import source_of


def dicom_slice(path, pixels, spacing=(0.5, 0.8)):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # rows along y, columns along -z: a sagittal slice
    ds.ImagePositionPatient, ds.PixelSpacing = [0, 0, 0], list(spacing)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_colour_dicom_is_read_as_grey_like_a_colour_png(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)
    path = dicom_slice(tmp_path / "colour.dcm", rgb[..., 0])
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    ds.save_as(path)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    grey = read_slice(path).pixels
    assert grey.shape == (30, 20)
    assert np.abs(grey - read_slice(tmp_path / "colour.png").pixels.astype(np.float32)).max() <= 1  # Pillow rounds


def test_prediction_has_the_input_size_and_its_numbers(trained_model, tmp_path):
    segmenter = Segmenter.load(trained_model)
    image = np.random.default_rng(0).integers(0, 4000, (100, 61)).astype(np.uint16)
    Image.fromarray(image).save(tmp_path / "slice16.png")
    prediction = segmenter.predict(tmp_path / "slice16.png")
    assert set(prediction.masks) == {"vertebral_body", "hemangioma"}
    for label, mask in prediction.masks.items():
        assert mask.shape == (100, 61) and mask.dtype == bool
        assert prediction.probabilities[label].shape == (100, 61)
        assert prediction.area(label) == mask.sum() and prediction.area_unit == "px"
    lower = prediction.with_threshold(0.0)
    assert lower.masks["hemangioma"].all() and lower.probabilities is prediction.probabilities


def test_skipping_the_grid_padding_changes_almost_nothing():
    segmenter = Segmenter.load()  # the bundled model, on a long real slice that leaves wide padding bands
    image = np.asarray(Image.open(EXAMPLE))
    x = preprocess(image, segmenter.model.preprocessing)
    _, cols = segmenter.window(image.shape, tuple(x.shape[-2:]))
    assert (cols.stop - cols.start) < x.shape[-1] / 1.5  # the window is much narrower than the square grid
    with torch.inference_mode():
        whole = from_model_grid(torch.sigmoid(segmenter.forward(x)).cpu(), image.shape)[0].numpy()
    windowed = segmenter.predict(image)
    for c, label in enumerate(segmenter.labels):
        assert np.abs(windowed.probabilities[label] - whole[c]).mean() < 0.01
        agree = windowed.masks[label] == (whole[c] > segmenter.model.threshold)
        assert agree.mean() > 0.995, label


def test_a_slice_gets_the_same_result_whatever_it_is_batched_with(trained_model):
    segmenter = Segmenter.load(trained_model)
    rng = np.random.default_rng(3)
    tall, wide, square = rng.random((120, 40)), rng.random((50, 130)), rng.random((64, 64))
    alone = segmenter.probabilities([tall])[0]
    mixed = segmenter.probabilities([square, tall, wide, tall])
    assert [p.shape[1:] for p in mixed] == [(64, 64), (120, 40), (50, 130), (120, 40)]
    np.testing.assert_allclose(mixed[1], alone, atol=1e-6)
    np.testing.assert_allclose(mixed[3], alone, atol=1e-6)


def test_dicom_spacing_gives_areas_in_mm2(trained_model, tmp_path):
    pixels = np.random.default_rng(1).integers(0, 1000, (64, 48))
    prediction = Segmenter.load(trained_model).predict(dicom_slice(tmp_path / "s.dcm", pixels))
    assert prediction.area_unit == "mm2"
    assert prediction.area("vertebral_body") == pytest.approx(prediction.masks["vertebral_body"].sum() * 0.4)


def test_test_time_augmentation_keeps_shapes(trained_model):
    image = np.random.default_rng(2).random((70, 90)).astype(np.float32)
    segmenter = Segmenter.load(trained_model)
    plain, mirrored = segmenter.predict(image), segmenter.predict(image, tta=True)
    assert mirrored.probabilities["hemangioma"].shape == (70, 90)
    assert not np.allclose(plain.probabilities["hemangioma"], mirrored.probabilities["hemangioma"])


def test_model_spec_parsing(tmp_path):
    assert parse_model_spec("user/model@v1.2") == ("user/model", "v1.2")
    assert parse_model_spec("user/model") == ("user/model", None)
    odd = tmp_path / "with@sign"
    odd.mkdir()
    assert parse_model_spec(str(odd)) == (str(odd), None)


def test_hemseg_model_variable_and_hub_cache(trained_model, tmp_path):
    # A Hub model already in huggingface_hub's cache loads offline, by id and by id@revision.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-hemseg"
    shutil.copytree(trained_model, repo / "snapshots" / commit, ignore=shutil.ignore_patterns("evaluation"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = "from hemseg import Segmenter; s = Segmenter.load(); print(s.source, s.labels)"
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    for spec in ("someone/tiny-hemseg", f"someone/tiny-hemseg@{commit}"):
        result = run(["-c", code], env={**env, "HEMSEG_MODEL": spec})
        assert result.stdout.startswith(spec) and "hemangioma" in result.stdout


def test_unreachable_model_falls_back_to_the_bundled_one():
    result = run(
        ["-c", "from hemseg import Segmenter; print(Segmenter.load().source)"],
        env={"HEMSEG_MODEL": "nobody/not-cached", "HF_HUB_OFFLINE": "1"},
    )
    assert result.stdout.strip().endswith("bundled") and "could not be loaded" in result.stderr


def test_explicit_model_that_cannot_load_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="could not load the model"):
        Segmenter.load("nobody/not-cached")
    with pytest.raises(FileNotFoundError):
        Segmenter.load(str(tmp_path / "missing-folder"))


def test_predict_command_writes_masks_overlays_and_a_table(trained_model, tiny_slices, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in sorted(p.name for p in tiny_slices.glob("*_axial_*.png") if p.stem.count("_") == 3)[:3]:
        shutil.copy(tiny_slices / name, inputs / name)
    result = run(
        ["-m", "hemseg", "predict", str(inputs), "--out", str(tmp_path / "out"), "--model", str(trained_model), "--tta"]
    )
    assert "3 images segmented" in result.stdout
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {"hemangioma_count", "hemangioma_area", "area_unit"} <= set(rows[0])
    for row in rows:
        stem = os.path.basename(row["file"]).removesuffix(".png")
        size = Image.open(row["file"]).size
        for suffix in ("vertebral_body", "hemangioma", "overlay"):
            assert Image.open(tmp_path / "out" / f"{stem}_{suffix}.png").size == size
        for label in ("vertebral_body", "hemangioma"):
            assert set(np.unique(np.asarray(Image.open(tmp_path / "out" / f"{stem}_{label}.png")))) <= {0, 255}


def test_predict_skips_what_it_cannot_read_and_keeps_every_output(trained_model, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    shutil.copy(EXAMPLE, first / "slice.png")
    (first / "broken.png").write_bytes(EXAMPLE.read_bytes()[:300])  # cut short, as by a failed copy
    shutil.copy(EXAMPLE, first / "._slice.png")  # macOS metadata beside the image: not an input
    shutil.copy(EXAMPLE, second / "slice.png")  # the same name in another folder
    dicom_slice(second / "IM0001", np.arange(48 * 40, dtype=np.uint16).reshape(48, 40))  # scanner-style, no suffix
    out = tmp_path / "out"
    command = ["-m", "hemseg", "predict", str(first), str(second), "--out", str(out), "--model", str(trained_model)]
    result = run(command, check=False)
    assert result.returncode == 1
    assert "3 images segmented" in result.stdout and "1 skipped" in result.stdout
    assert f"error: {first / 'broken.png'}: " in result.stderr and "Traceback" not in result.stderr
    with open(out / "predictions.csv") as f:
        rows = {Path(row["file"]).relative_to(tmp_path).as_posix(): row for row in csv.DictReader(f)}
    assert set(rows) == {"first/broken.png", "first/slice.png", "second/IM0001", "second/slice.png"}
    assert rows["first/broken.png"]["error"] and not rows["first/broken.png"]["hemangioma_area"]
    assert [rows[k]["output"] for k in ("first/slice.png", "second/slice.png", "second/IM0001")] == [
        "slice",
        "slice-2",
        "IM0001",
    ]
    for row in rows.values():
        if not row["error"]:
            assert row["height"] and (out / f"{row['output']}_overlay.png").exists()
    assert rows["second/IM0001"]["area_unit"] == "mm2"
    refused = run([*command[:5], "--out", str(first / "slice.png")], check=False)  # --out names a file
    assert refused.returncode == 2 and "slice.png" in refused.stderr and "Traceback" not in refused.stderr


def test_evaluate_command_reports_per_label_and_plane(trained_model, tiny_slices, tmp_path):
    result = run(
        [
            "-m",
            "hemseg",
            "evaluate",
            "--model",
            str(trained_model),
            "--data",
            str(tiny_slices),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert "| sagittal |" in result.stdout and "simulated" in result.stdout
    # The test split holds one case of each of the fixture's two sources: each label gets a table per source.
    assert result.stdout.count("| Source |") == 2
    assert "| srca | 1 |" in result.stdout and "| srcb | 1 |" in result.stdout
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {
        "report.md",
        "metrics.csv",
        "metrics.json",
        "per_slice.csv",
        "per_plane.png",
        "best_worst_hemangioma.png",
        "best_worst_vertebral_body.png",
    } <= names
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["label"], r["plane"]) for r in rows} >= {("hemangioma", "axial"), ("vertebral_body", "overall")}
    # Each slice's contrast column describes its truth on the image as read, whatever the model predicted.
    with open(tmp_path / "r" / "per_slice.csv") as f:
        slices = list(csv.DictReader(f))
    for row in slices[:40]:
        image = np.asarray(Image.open(tiny_slices / row["file"]))
        truth = np.asarray(Image.open(tiny_slices / row["file"].replace(".png", f"_{row['label']}.png"))) > 0
        expected = contrast_to_noise(image, truth)
        assert math.isnan(expected) if math.isnan(float(row["contrast"])) else float(row["contrast"]) == expected
    assert any(not math.isnan(float(row["contrast"])) for row in slices[:40])
    assert "| Contrast-to-noise of the truth |" in result.stdout
    assert {(row["case"].split("_")[0], row["source"]) for row in slices} == {("srca", "srca"), ("srcb", "srcb")}


def scored(tp: int, fn: int, fp: int = 0, **fields) -> dict:
    """``slice_metrics`` of a 16x16 slice whose truth has tp + fn pixels, tp of them predicted, and fp false ones
    (one lesion each), with ``fields`` added."""
    truth, pred = np.zeros(256, bool), np.zeros(256, bool)
    truth[: tp + fn] = pred[:tp] = True
    pred[200 : 200 + fp] = True
    return {**slice_metrics(pred.reshape(16, 16), truth.reshape(16, 16)), **fields}


def test_contrast_table_bins_slices_with_truth():
    def record(contrast: float, tp: int, fn: int, fp: int = 0) -> dict:
        return scored(tp, fn, fp, contrast=contrast, label="hemangioma")

    records = [record(-3.0, 0, 10), record(0.5, 5, 5), record(0.9, 10, 0, fp=10), record(6.0, 8, 2)]
    records += [record(math.nan, 1, 1), record(6.0, 0, 0, fp=3)]  # no surroundings; no truth: both left out
    lines = contrast_table(records, "hemangioma").splitlines()
    assert lines[2:] == [
        "| < -2 | 1 | 0.000 | 0.000 | n/a | 0.000 |",
        "| 0 to 1 | 2 | 0.667 | 0.750 | 0.600 | 1.000 |",
        "| >= 4 | 1 | 0.889 | 0.800 | 1.000 | 1.000 |",
    ]


def test_source_table_scores_each_source_of_a_label():
    def record(case: str, tp: int, fn: int, fp: int = 0, label: str = "hemangioma") -> dict:
        return scored(tp, fn, fp, label=label, case=case, source=source_of(case))

    records = [record("vb2_01", 5, 5), record("vb2_02", 0, 0, fp=3), record("vb2_02", 0, 0)]
    records += [record("vb3_07", 8, 2), record("vb3_07", 0, 0), record("vb3_07", 10, 0, label="vertebral_body")]
    lines = source_table(records, "hemangioma").splitlines()
    # vb2: Dice 2*5/(10+5) on its one slice with truth, pooled 2*5/(10+5+3) with the false alarm on one of its two
    # empty slices; that false alarm is a lesion, so lesion precision is 1/2 (F1 2/3). vb3: Dice 16/18, no false
    # alarm, its one lesion found.
    assert lines[2:] == [
        "| vb2 | 2 | 3 | 1 | 0.667 | 0.556 | 0.500 | 0.667 |",
        "| vb3 | 1 | 2 | 1 | 0.889 | 0.889 | 0.000 | 1.000 |",
    ]
    assert source_of("vb3_07") == "vb3" and source_of("case") == "case"


@pytest.mark.parametrize(("cases", "tables"), [(("a_1", "b_1"), 1), (("a_1", "a_2"), 0), (("p1", "p2"), 0)])
def test_report_has_a_source_table_only_for_several_named_sources(tmp_path, cases, tables):
    records = [
        scored(10, 0, label="hemangioma", plane="axial", case=case, source=source_of(case), contrast=1.0, index=i)
        for i, case in enumerate(cases)
    ]
    write_report(records, tmp_path, "t", "note")
    assert (tmp_path / "report.md").read_text().count("| Source |") == tables


class RecordingApi:
    """Stands in for HfApi at the network boundary: records what would be uploaded."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], sorted(os.listdir(kwargs["folder_path"]))))


def test_push_uploads_the_folder_as_it_is(trained_model):
    api = RecordingApi()
    assert push_folder(trained_model, "someone/model", private=True, api=api) == 0
    assert api.calls[0] == ("create_repo", "someone/model", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert api.calls[1][0] == "upload_folder" and api.calls[1][2] == sorted(os.listdir(trained_model))


def test_failed_push_says_why_and_keeps_the_model(trained_model, capsys):
    class OfflineApi(RecordingApi):
        def create_repo(self, repo_id, **kwargs):
            raise OfflineModeIsEnabled("Cannot reach the Hub: offline mode is enabled")

    before = sorted(os.listdir(trained_model))
    assert push_folder(trained_model, "someone/model", api=OfflineApi()) == 1
    message = capsys.readouterr().err
    assert "push to someone/model failed" in message and "offline" in message and "unchanged" in message
    assert sorted(os.listdir(trained_model)) == before


def test_push_to_an_unreachable_hub_says_why(trained_model):
    # The real client and a real connection, refused: a closed port on this machine stands for a network that is down.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free now, and nothing listens on it
    code = (
        "import sys, pathlib; from hemseg.hub import push_folder; "
        "raise SystemExit(push_folder(pathlib.Path(sys.argv[1]), 'someone/model'))"
    )
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": "hf_not_a_token"}
    result = run(["-c", code, str(trained_model)], env=env, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "push to someone/model failed" in result.stderr and "retry with: hf upload" in result.stderr


class RefusingHub(http.server.BaseHTTPRequestHandler):
    """A stand-in Hub endpoint that refuses every request with ``status``, as the Hub refuses a bad token (401)
    or a token without write access (403)."""

    status = 401

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": "Invalid credentials in Authorization header"}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = answer

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.mark.parametrize("status, hint", [(401, "hf auth login"), (403, "may not write to someone/model")])
def test_push_refused_by_the_hub_says_why(trained_model, status, hint):
    handler = type("Refusing", (RefusingHub,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    code = (
        "import sys, pathlib; from hemseg.hub import push_folder; "
        "raise SystemExit(push_folder(pathlib.Path(sys.argv[1]), 'someone/model'))"
    )
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_TOKEN": "hf_bad"}
    before = sorted(os.listdir(trained_model))
    try:
        result = run(["-c", code, str(trained_model)], env=env, check=False)
    finally:
        server.shutdown()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(status) in result.stderr and hint in result.stderr and "retry with: hf upload" in result.stderr
    assert sorted(os.listdir(trained_model)) == before


def test_train_with_push_offline_keeps_the_model_and_exits_nonzero(tiny_slices, tmp_path):
    out = tmp_path / "pushed"
    result = run(
        [
            "train.py",
            *one_epoch(tiny_slices, out),
            "--push-to-hub",
            "--hub-model-id",
            "someone/tiny",
        ],
        env={"HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert result.returncode == 1 and "push to someone/tiny failed" in result.stderr
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()
