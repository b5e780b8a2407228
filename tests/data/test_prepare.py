import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run, save_nifti, synthetic_ras, write_case, write_dicom_series
from PIL import Image

from hemseg.cli import main
from hemseg.data.prepare import SamplingConfig, assign_splits, empty_splits_note, prepare
from hemseg.data.simulate import SimulatorConfig

SOME_LESIONS = SimulatorConfig(lesion_count_weights=(0, 0.5, 0.5))


def manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv") as f:
        return list(csv.DictReader(f))


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_prepare_writes_a_complete_slice_folder(tmp_path, nifti_cases):
    out = prepare([nifti_cases], tmp_path / "slices", seed=3, simulator=SOME_LESIONS, workers=1)
    rows = manifest(out)
    assert {"file", "case", "plane", "index", "spacing_row", "spacing_col", "split"} <= set(rows[0])
    assert {r["plane"] for r in rows} == {"axial", "coronal", "sagittal"}
    assert {r["case"] for r in rows} == {"srca_01", "srcb_01"}
    described = json.loads((out / "dataset.json").read_text())
    assert list(described["labels"]) == ["vertebral_body", "hemangioma"]
    assert "simulated" in described["labels"]["hemangioma"]
    assert described["seed"] == 3 and described["simulator"]["version"]
    assert described["simulator"]["parameters"]["lesion_count_weights"] == [0, 0.5, 0.5]
    assert all(len(c["lesions"]) in (1, 2) for c in described["cases"].values())
    with_lesion = 0
    for row in rows:
        stem = row["file"].removesuffix(".png")
        image = read(out / row["file"])
        body, lesion = read(out / f"{stem}_vertebral_body.png"), read(out / f"{stem}_hemangioma.png")
        assert image.dtype == np.uint8 and image.shape == body.shape == lesion.shape
        assert set(np.unique(body)) <= {0, 255} and set(np.unique(lesion)) <= {0, 255}
        assert not ((lesion > 0) & (body == 0)).any()  # every lesion pixel inside a vertebral body
        assert int(row["hemangioma_px"]) == (lesion > 0).sum()
        with_lesion += lesion.any()
    assert 0.2 <= with_lesion / len(rows) <= 0.8
    assert any(int(r["vertebral_body_px"]) == 0 for r in rows)  # slices with no vertebra, on purpose
    assert {r["plane"] for r in rows if int(r["hemangioma_px"]) > 0} == {"axial", "coronal", "sagittal"}


def test_whole_slices_say_where_the_bodies_are_labelled(tmp_path):
    image, label = synthetic_ras()
    label[label == 3] = 0  # the top body stays in the image but has no mask, like T10 above a T11-L5 label
    save_nifti(image, tmp_path / "top_01_image.nii.gz")
    save_nifti(label, tmp_path / "top_01_label.nii.gz")
    out = prepare([tmp_path / "top_01_image.nii.gz"], tmp_path / "slices", sampling=SamplingConfig(label_margin_mm=4))
    rows = manifest(out)
    labelled = np.flatnonzero(label.any(axis=(0, 1)))  # z 8..43
    nz = label.shape[2]
    axial = [int(r["index"]) for r in rows if r["plane"] == "axial"]
    # Axial slices outside the labelled extent show only an unlabelled body: none is cut.
    assert min(axial) >= labelled[0] - 4 and max(axial) <= labelled[-1] + 4
    assert max(axial) > labelled[-1]  # the margin itself is kept
    for row in rows:
        first, end = int(row["labelled_from"]), int(row["labelled_to"])
        if row["plane"] == "axial":
            assert (first, end) == (0, int(row["height"]))
            continue
        # The whole slice, superior up: the unlabelled top body is in it, above the labelled rows.
        assert int(row["height"]) == nz
        assert (first, end) == (nz - (labelled[-1] + 1 + 4), nz - (labelled[0] - 4))
        body = read(out / row["file"].replace(".png", "_vertebral_body.png")) > 0
        assert not body[:first].any() and not body[end:].any()
    for z in axial:  # the manifest's index is still the slice number of the volume
        stem = f"top_01_axial_{z:03d}"
        expected = (label[:, :, z] > 0).T[::-1, ::-1]
        assert np.array_equal(read(out / f"{stem}_vertebral_body.png") > 0, expected)


def test_same_seed_same_folder(tmp_path, nifti_cases):
    a = prepare([nifti_cases], tmp_path / "a", seed=7, workers=2)
    b = prepare([nifti_cases], tmp_path / "b", seed=7, workers=1)
    assert (a / "manifest.csv").read_bytes() == (b / "manifest.csv").read_bytes()
    for row in manifest(a):
        assert (a / row["file"]).read_bytes() == (b / row["file"]).read_bytes()


def test_splits_are_by_case_and_deterministic():
    cases = [f"vb2_{i:02d}" for i in range(17)] + [f"vb3_{i:02d}" for i in range(54)]
    splits = assign_splits(cases, (0.7, 0.15, 0.15), seed=0)
    assert splits == assign_splits(list(reversed(cases)), (0.7, 0.15, 0.15), seed=0)
    assert splits != assign_splits(cases, (0.7, 0.15, 0.15), seed=1)
    for source in ("vb2", "vb3"):
        assert {s for c, s in splits.items() if c.startswith(source)} == {"train", "val", "test"}
    assert sum(s == "val" for s in splits.values()) == round(17 * 0.15) + round(54 * 0.15)


def test_a_held_out_source_is_all_test_and_the_others_train_and_val():
    cases = [f"vb2_{i:02d}" for i in range(17)] + [f"vb3_{i:02d}" for i in range(54)]
    splits = assign_splits(cases, (0.7, 0.15, 0.15), seed=0, test_sources=("vb2",))
    assert {splits[c] for c in cases[:17]} == {"test"}
    vb3 = [splits[c] for c in cases[17:]]
    assert vb3.count("test") == 0 and vb3.count("val") == round(54 * 0.15 / 0.85)  # the shares' proportion
    with pytest.raises(ValueError, match="no case of the held-out source"):
        assign_splits(cases, (0.7, 0.15, 0.15), seed=0, test_sources=("vb9",))
    with pytest.raises(ValueError, match="nothing is left to train on"):
        assign_splits(cases, (0.7, 0.15, 0.15), seed=0, test_sources=("vb2", "vb3"))


def test_every_slice_of_a_case_has_the_case_split(tmp_path):
    folder = tmp_path / "volumes"
    folder.mkdir()
    for i in range(6):
        write_case(folder, f"src_{i:02d}", seed=i)
    out = prepare([folder], tmp_path / "s", sampling=SamplingConfig(slices_per_plane=4, split=(0.5, 0.25, 0.25)))
    split_of = {}
    for row in manifest(out):
        assert split_of.setdefault(row["case"], row["split"]) == row["split"]
    assert sorted(split_of.values()).count("train") == 2


DRAW_SPLIT = (0.5, 0.25, 0.25)


def four_cases_one_draw(tmp_path: Path) -> tuple[Path, Path]:
    """Four synthetic volumes (2 train, 1 val, 1 test case) and the slice folder of their single lesion draw."""
    folder = tmp_path / "volumes"
    folder.mkdir()
    for i in range(4):
        write_case(folder, f"src_{i:02d}", seed=i)
    sampling = SamplingConfig(split=DRAW_SPLIT)
    return folder, prepare([folder], tmp_path / "one", seed=5, simulator=SOME_LESIONS, sampling=sampling)


def test_more_lesion_draws_for_training_cases_only(tmp_path):
    folder, one = four_cases_one_draw(tmp_path)
    sampling = SamplingConfig(split=DRAW_SPLIT, train_simulations=3)
    three = prepare([folder], tmp_path / "three", seed=5, simulator=SOME_LESIONS, sampling=sampling)
    rows_one, rows_three = manifest(one), manifest(three)
    # Every slice of the single-draw folder is there again, byte for byte: validation and test do not change.
    for row in rows_one:
        for name in (row["file"], row["file"].replace(".png", "_hemangioma.png")):
            assert (one / name).read_bytes() == (three / name).read_bytes()
    extra = [r for r in rows_three if "_sim" in r["file"]]
    assert {r["split"] for r in extra} == {"train"} and {r["case"] for r in extra} <= {r["case"] for r in rows_one}
    train_cases = {r["case"] for r in rows_one if r["split"] == "train"}
    for case in train_cases:
        assert {r["file"].split("_")[2] for r in extra if r["case"] == case} == {"sim1", "sim2"}
    cases = json.loads((three / "dataset.json").read_text())["cases"]
    for record in cases.values():
        if record["split"] == "train":
            draws = [record["lesions"], *record["simulations"]]
            assert len(draws) == 3
            assert len({json.dumps(d) for d in draws}) == 3  # each draw its own lesions
        else:
            assert "simulations" not in record
    bad = run(["-m", "hemseg", "prepare", str(folder), str(tmp_path / "x"), "--train-simulations", "0"], check=False)
    assert bad.returncode == 2 and "--train-simulations" in bad.stderr


def test_further_draws_can_favour_atypical_lesions(tmp_path):
    folder, one = four_cases_one_draw(tmp_path)
    sampling = SamplingConfig(split=DRAW_SPLIT, train_simulations=3, train_typical_share=0.0)
    favoured = prepare([folder], tmp_path / "atypical", seed=5, simulator=SOME_LESIONS, sampling=sampling)
    for row in manifest(one):  # first draws, and so validation and test, are the simulator's as before
        assert (one / row["file"]).read_bytes() == (favoured / row["file"]).read_bytes()
    description = json.loads((favoured / "dataset.json").read_text())
    assert description["sampling"]["train_typical_share"] == 0.0
    first = [lesion for r in description["cases"].values() for lesion in r["lesions"]]
    further = [lesion for r in description["cases"].values() for draw in r.get("simulations", []) for lesion in draw]
    assert len(further) >= 4 and {lesion["kind"] for lesion in further} == {"atypical"}  # 2 cases x 2 draws
    assert "typical" in {lesion["kind"] for lesion in first}
    args = ["-m", "hemseg", "prepare", str(folder), str(tmp_path / "x"), "--train-typical-share", "1.5"]
    bad = run(args, check=False)
    assert bad.returncode == 2 and "--train-typical-share must be between 0 and 1" in bad.stderr


def test_dicom_series_with_label_gives_16_bit_slices(tmp_path):
    image, label = synthetic_ras()
    series = write_dicom_series(image.astype(np.int16) * 3, tmp_path / "vols" / "patient1")
    save_nifti(label, tmp_path / "vols" / "patient1_label.nii.gz", ("R", "A", "S"))
    out = prepare([series], tmp_path / "s", seed=0)
    rows = manifest(out)
    assert {r["case"] for r in rows} == {"patient1"}
    assert read(out / rows[0]["file"]).dtype == np.uint16


def test_existing_output_is_never_replaced_silently(tmp_path, nifti_cases):
    out = tmp_path / "slices"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="already exists"):
        prepare([nifti_cases], out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_failure_midway_leaves_nothing_that_looks_finished(tmp_path, nifti_cases):
    broken = nifti_cases / "zzz_01_image.nii.gz"
    (nifti_cases / "zzz_01_label.nii.gz").write_bytes((nifti_cases / "srca_01_label.nii.gz").read_bytes())
    broken.write_bytes(b"truncated")
    with pytest.raises(ValueError, match="zzz_01_image.nii.gz"):
        prepare([nifti_cases], tmp_path / "slices", workers=1)
    assert os.listdir(tmp_path) == ["volumes"]


def test_volume_without_label_is_refused_by_name(tmp_path):
    image, _ = synthetic_ras()
    save_nifti(image, tmp_path / "lonely_image.nii.gz")
    with pytest.raises(ValueError, match="lonely_image.nii.gz"):
        prepare([tmp_path / "lonely_image.nii.gz"], tmp_path / "out")


def test_command_line_prepare_with_preview(tmp_path, nifti_cases):
    preview = tmp_path / "preview.png"
    result = run(
        [
            "-m",
            "hemseg",
            "prepare",
            str(nifti_cases),
            str(tmp_path / "s"),
            "--slices-per-plane",
            "8",
            "--seed",
            "1",
            "--preview",
            str(preview),
        ],
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "slices" in result.stdout and len(manifest(tmp_path / "s")) == 2 * 3 * 8
    assert Image.open(preview).size[0] > 300


def test_command_line_reports_bad_input_in_one_line(tmp_path):
    result = run(["-m", "hemseg", "prepare", str(tmp_path / "nowhere"), str(tmp_path / "s")], check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "nowhere" in result.stderr and "Traceback" not in result.stderr


def test_shared_case_prepares(tmp_path, shared_case):
    out = prepare([shared_case], tmp_path / "s", seed=0, simulator=SOME_LESIONS)
    rows = manifest(out)
    assert len(rows) == 3 * 24
    assert {(float(r["spacing_row"]), float(r["spacing_col"])) for r in rows} == {(1.0, 1.0)}
    assert any(int(r["hemangioma_px"]) > 0 for r in rows)


def test_too_few_cases_for_a_split_are_said_not_silently_put_in_train(tmp_path, nifti_cases, capsys):
    # One case per source: each source's 15 % rounds to no validation and no test case.
    assert main(["prepare", str(nifti_cases), str(tmp_path / "s"), "--slices-per-plane", "2"]) == 0
    said = capsys.readouterr().err
    assert "warning: no case went to val or test (2 train, 0 val, 0 test)" in said and "--split 0.34,0.33,0.33" in said
    assert empty_splits_note({"a": "train", "b": "val", "c": "test"}, (0.7, 0.15, 0.15), held_out=False) == ""
