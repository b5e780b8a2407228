import csv
import math

import numpy as np
import pytest
from conftest import run
from PIL import Image

from hemseg import Segmenter, UNet
from hemseg.data.dataset import load, select_split
from hemseg.data.volumes import source_of
from hemseg.evaluation.evaluate import contrast_table, evaluate_dataset, source_table, write_report
from hemseg.evaluation.seeds import seed_table
from hemseg.metrics import contrast_to_noise, slice_metrics


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
    # Each slice's contrast column describes its truth on the image as read, whatever the model predicted; for
    # vertebral bodies within the rows where they are labelled, as they are scored.
    with open(tmp_path / "r" / "per_slice.csv") as f:
        slices = list(csv.DictReader(f))
    with open(tiny_slices / "manifest.csv") as f:
        labelled = {row["file"]: slice(int(row["labelled_from"]), int(row["labelled_to"])) for row in csv.DictReader(f)}
    for row in slices[:40]:
        rows = labelled[row["file"]] if row["label"] == "vertebral_body" else slice(None)
        image = np.asarray(Image.open(tiny_slices / row["file"]))[rows]
        truth = np.asarray(Image.open(tiny_slices / row["file"].replace(".png", f"_{row['label']}.png")))[rows] > 0
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


class Oracle(Segmenter):
    """Answers each slice of a split, in order, with its own truth plus a vertebral body drawn above the rows where
    bodies are labelled: an unlabelled vertebra that a model rightly finds."""

    def __init__(self, dataset):
        super().__init__(UNet(1, 2, 4, labels=["vertebral_body", "hemangioma"]), "oracle")
        self.answers = iter(dataset.with_format("numpy"))

    def probabilities(self, images, spacings=None, tta=None, batch_size=16):
        out = []
        for _ in images:
            row = next(self.answers)
            truth = np.stack([row["vertebral_body"] > 0, row["hemangioma"] > 0]).astype(np.float32)
            first = int(row["labelled_rows"][0])
            truth[0, : max(first - 1, 0)] = 1.0  # everything above the labelled rows called vertebral body
            out.append(truth)
        return out


def test_vertebral_bodies_are_scored_only_within_the_rows_where_they_are_labelled(tiny_slices):
    dataset = select_split(load(tiny_slices), "val")
    records = evaluate_dataset(Oracle(dataset), dataset, None, progress=False)
    bodies = [r for r in records if r["label"] == "vertebral_body"]
    assert bodies and all(r["fp"] == 0 and r["fn"] == 0 for r in bodies)  # what lies beyond is not counted
    assert all(r["fp"] == 0 for r in records if r["label"] == "hemangioma")
    seeds = seed_table(Oracle(dataset), dataset, None, candidates=(), progress=False)
    assert {row["label"]: row["pooled_dice"] for row in seeds} == {"vertebral_body": 1.0, "hemangioma": 1.0}
