import csv

import numpy as np
import pytest
from conftest import run

from hemseg.lab.ceilings import adjacent_dice, ceilings, dice, grid_dice, outline_dice


def test_dice_of_hand_built_masks():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    assert dice(a, b) == 1.0  # both empty
    a[0, :2] = True
    b[0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)  # 2 * 1 / (2 + 2)


def test_grid_dice_is_exact_on_the_grid_and_loses_what_the_grid_cannot_hold():
    mask = np.zeros((16, 16), bool)
    mask[3:9, 5:12] = True
    assert grid_dice(mask, 16) == 1.0
    dot = np.zeros((64, 64), bool)
    dot[0, 0] = True  # a pixel between the samples of a 16 grid
    assert grid_dice(dot, 16) == 0.0


def test_outline_dice_of_a_square_one_pixel_off():
    mask = np.zeros((9, 9), bool)
    mask[2:6, 2:6] = True  # 16 pixels
    # Grown by one pixel on every edge, corners not: 16 + 4 * 4 = 32 pixels, 16 of them shared.
    assert outline_dice(mask, grow=True) == pytest.approx(2 * 16 / (32 + 16))
    assert outline_dice(mask, grow=False) == pytest.approx(2 * 4 / (4 + 16))  # shrunk: the inner 2x2
    dot = np.zeros((5, 5), bool)
    dot[2, 2] = True
    assert outline_dice(dot, grow=False) == 0.0  # a one-pixel mask shrinks to nothing


def test_adjacent_dice_on_a_box():
    label = np.zeros((10, 10, 10), bool)  # RAS: sagittal cuts axis 0, axial axis 2
    label[3:7, 2:8, 4:6] = True
    assert adjacent_dice(label, "sagittal", 5) == 1.0  # inside: both neighbours are the same rectangle
    assert adjacent_dice(label, "sagittal", 3) == 0.5  # edge: one neighbour empty, one the same
    assert adjacent_dice(label, "axial", 4) == 0.5
    label[:, :, 5] = False
    assert adjacent_dice(label, "axial", 4) == 0.0  # one slice thick: both neighbours empty


def test_ceilings_on_a_slice_folder(tiny_slices):
    result = ceilings(tiny_slices, None, [64])
    # The synthetic bodies are boxes (conftest.synthetic_ras): x 10-29, y 16-39, z in three runs of 14 slices.
    edges = {"sagittal": {10, 29}, "coronal": {16, 39}, "axial": {8, 21, 30, 43, 52, 65}}
    with open(tiny_slices / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["vertebral_body_px"]) > 0]
    for plane, edge in edges.items():
        indices = [int(r["index"]) for r in rows if r["plane"] == plane]
        expected = np.mean([0.5 if i in edge else 1.0 for i in indices])
        scores = result["vertebral_body"][plane]
        assert scores["adjacent slice"] == pytest.approx(expected)
        assert scores["n_fg"] == len(indices)
        assert 0 < scores["grid 64"] <= 1
        assert scores["1 px shrunk"] < scores["1 px grown"] < 1  # boxes at least 14 px wide: shrinking loses more
    assert "adjacent slice" not in result["hemangioma"]["overall"]  # simulated lesions are not kept in 3D


def test_ceilings_command_prints_tables_and_refuses_other_folders(tiny_slices, tmp_path):
    out = run(["-m", "hemseg", "lab", "ceilings", "--data", str(tiny_slices), "--split", "all", "--sizes", "64,96"])
    assert "| plane | grid 64 | grid 96 | adjacent slice | 1 px grown | 1 px shrunk | slices with label |" in out.stdout
    bad = run(["-m", "hemseg", "lab", "ceilings", "--data", str(tmp_path)], check=False)
    assert bad.returncode == 2 and "not a slice folder" in bad.stderr
