import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE, REPO, dicom_slice, run, whole_outputs
from PIL import Image
from pydicom.data import get_testdata_file

from hemseg.cli import main
from hemseg.lab.hostile import nifti_of_zeros


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
    nifti_of_zeros(first / "negative.nii", (4, 5, 6), dim=(4, -5, 6))  # once a traceback that stopped the batch
    shutil.copy(EXAMPLE, first / "._slice.png")  # macOS metadata beside the image: not an input
    shutil.copy(EXAMPLE, second / "slice.png")  # the same name in another folder
    dicom_slice(second / "IM0001", np.arange(48 * 40, dtype=np.uint16).reshape(48, 40))  # scanner-style, no suffix
    out = tmp_path / "out"
    command = ["-m", "hemseg", "predict", str(first), str(second), "--out", str(out), "--model", str(trained_model)]
    result = run(command, check=False)
    assert result.returncode == 1
    assert "3 images segmented" in result.stdout and "2 skipped" in result.stdout
    assert f"error: {first / 'broken.png'}: " in result.stderr and "Traceback" not in result.stderr
    assert f"error: {first / 'negative.nii'}: the NIfTI header gives the dimensions (4, -5, 6)" in result.stderr
    with open(out / "predictions.csv") as f:
        rows = {Path(row["file"]).relative_to(tmp_path).as_posix(): row for row in csv.DictReader(f)}
    assert set(rows) == {
        "first/broken.png",
        "first/negative.nii",
        "first/slice.png",
        "second/IM0001",
        "second/slice.png",
    }
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


def test_predict_reports_the_pixel_size_it_used_and_takes_one_given(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(EXAMPLE, inputs / "slice.png")  # a PNG: no pixel size of its own
    dicom_slice(inputs / "scan.dcm", np.arange(64 * 48, dtype=np.uint16).reshape(64, 48), spacing=(0.7, 0.7))
    out = tmp_path / "out"
    run(["-m", "hemseg", "predict", str(inputs), "--out", str(out)])  # the bundled model: a physical contract
    with open(out / "predictions.csv") as f:
        rows = {Path(row["file"]).name: row for row in csv.DictReader(f)}
    assert rows["scan.dcm"]["spacing_source"] == "file" and float(rows["scan.dcm"]["spacing_row"]) == 0.7
    assert rows["slice.png"]["spacing_source"] == "estimated" and 0.5 < float(rows["slice.png"]["spacing_row"]) < 2
    assert main(["predict", str(inputs), "--out", str(out), "--pixel-size", "0.9"]) == 0  # the same, in this process
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(row["spacing_source"], row["spacing_row"], row["area_unit"]) for row in rows} == {("given", "0.9", "mm2")}
    for bad in ("-1", "nan"):
        assert main(["predict", str(inputs), "--out", str(out), "--pixel-size", bad]) == 2
        assert "--pixel-size must be a number of mm above 0" in capsys.readouterr().err


def copies(folder, n):
    folder.mkdir()
    for i in range(n):
        shutil.copy(EXAMPLE, folder / f"s{i:03d}.png")
    return folder


@pytest.mark.slow
def test_a_full_disk_stops_predict_in_one_line_and_leaves_no_truncated_file(trained_model, tmp_path, small_disk):
    out = small_disk("512k") / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("file,output\nold.png,old\n")  # an earlier run's table
    result = run(
        ["-m", "hemseg", "predict", str(copies(tmp_path / "in", 40)), "--out", str(out), "--model", str(trained_model)],
        check=False,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device writing " + str(out) in errors[0]
    done = int(re.search(r"(\d+) of 40 inputs done", errors[0]).group(1))
    assert 0 < done < 40
    files = whole_outputs(out)
    table = out / "predictions.csv"
    if table in files:  # the table of this run (the inputs done), never the earlier run's
        assert [row["output"] for row in csv.DictReader(table.open())] == [f"s{i:03d}" for i in range(done)]
    assert "removed" in errors[0] or table in files


@pytest.mark.slow
def test_ctrl_c_stops_predict_with_what_was_done_and_no_truncated_file(trained_model, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hemseg",
            "predict",
            str(copies(tmp_path / "in", 400)),
            "--out",
            str(out),
            "--model",
            str(trained_model),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while len(list(out.glob("*_overlay.png"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    line = stderr.strip().splitlines()[-1]
    done = int(re.match(r"interrupted: (\d+) of 400 inputs done; .*predictions.csv lists them", line).group(1))
    assert done >= 3
    whole_outputs(out)
    assert len(list(csv.DictReader((out / "predictions.csv").open()))) == done


def test_every_frame_of_a_multi_frame_dicom_gets_its_row_and_files(trained_model, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(get_testdata_file("SC_rgb_rle_2frame.dcm"), inputs / "pair.dcm")  # two RLE colour frames
    shutil.copy(EXAMPLE, inputs / "slice.png")
    assert main(["predict", str(inputs), "--out", str(tmp_path / "out"), "--model", str(trained_model)]) == 0
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["output"], row["frame"]) for row in rows] == [("pair_f001", "1"), ("pair_f002", "2"), ("slice", "")]
    assert all((tmp_path / "out" / f"{row['output']}_overlay.png").exists() for row in rows)
