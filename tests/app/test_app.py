"""The app as users and programs meet it: `python app.py` served on localhost, driven by gradio_client; and the
App behind it, called directly."""

import os
import re

import gradio as gr
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import EXAMPLE, EXAMPLES, dicom_slice, synthetic_ras
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from pydicom.data import get_testdata_file

from hemseg import Segmenter, UNet
from hemseg.app import ui
from hemseg.app.results import StoredResult, lesion_rows
from hemseg.app.storage import Storage
from hemseg.app.ui import App, build_app
from hemseg.data.volumes import cut
from hemseg.inference.segmenter import Prediction


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def segment(client, path, **kwargs):
    return client.predict(handle_file(str(path)), api_name="/segment", **kwargs)


@pytest.mark.slow
def test_segments_an_example_and_returns_everything(client):
    picture, pair, lesions, model_table, truth_table, errors, downloads, summary = segment(client, EXAMPLE)
    size = Image.open(EXAMPLE).size
    assert Image.open(picture).size == size
    assert len(pair) == 2
    assert lesions["headers"][:3] == ["lesion", "area", "largest diameter"]
    assert "simulated" in model_table and "| **" not in model_table  # a PNG has no plane: no row marked
    names = sorted(os.path.basename(f) for f in downloads)
    assert names == sorted(
        [
            "vb2_07_sagittal_042_vertebral_body.png",
            "vb2_07_sagittal_042_hemangioma.png",
            "vb2_07_sagittal_042_lesions.csv",
        ]
    )
    assert all(Image.open(f).size == size for f in downloads if f.endswith(".png"))
    assert "vb2_07_sagittal_042" in summary and "px²" in summary
    assert errors is None and truth_table["data"] in ([], [[None, None]], [["", ""]])


@pytest.mark.slow
def test_chosen_plane_marks_its_row_in_the_model_table(client):
    model_table = segment(client, EXAMPLE, plane="sagittal")[3]
    assert "| **sagittal** |" in model_table


@pytest.mark.slow
def test_ground_truth_gives_this_images_metrics(client):
    truth = EXAMPLES / "vb2_07_sagittal_042_hemangioma.png"
    result = segment(client, EXAMPLE, truth=handle_file(str(truth)))
    rows = {row[0]: row[1] for row in result[4]["data"]}
    assert set(rows) == {"dice", "iou", "precision", "recall", "accuracy", "ssim", "hd95"}
    assert 0 <= rows["accuracy"] <= 1
    assert Image.open(result[5]).size == Image.open(EXAMPLE).size


@pytest.mark.slow
def test_sixteen_bit_png_keeps_its_range(client, tmp_path):
    image = (np.asarray(Image.open(EXAMPLE), dtype=np.uint16) * 200).astype(np.uint16)
    Image.fromarray(image).save(tmp_path / "deep.png")
    picture = segment(client, tmp_path / "deep.png")[0]
    assert Image.open(picture).size == Image.open(EXAMPLE).size


@pytest.mark.slow
def test_nifti_volume_slice_and_whole_volume(client, tmp_path):
    image, _ = synthetic_ras()
    nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "vol.nii.gz")
    result = segment(client, tmp_path / "vol.nii.gz", plane="axial", slice_index=10)
    assert Image.open(result[0]).size == (40, 48)  # axial: columns left-right, rows anterior-posterior
    assert "mm²" in result[7] and "axial" in result[7]
    text, files = client.predict(handle_file(str(tmp_path / "vol.nii.gz")), "axial", api_name="/segment_volume")
    assert "mL" in text and len(files) == 2
    assert all(nib.load(f).shape == image.shape for f in files)
    # The 3D mask, cut where the single slice was, is that slice's mask.
    volume_mask = np.asarray(nib.load(next(f for f in files if "hemangioma" in f)).dataobj)
    slice_mask = np.asarray(Image.open(next(f for f in result[6] if f.endswith("_hemangioma.png")))) > 0
    assert np.array_equal(cut(volume_mask, "axial", 10) > 0, slice_mask)
    # A slab outside the field of view (NaN, as resampling leaves it) is background, not a reason to refuse.
    outside = image.astype(np.float32)
    outside[:, :, :3] = np.nan
    nib.save(nib.Nifti1Image(outside, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "fov.nii.gz")
    text, files = client.predict(handle_file(str(tmp_path / "fov.nii.gz")), "axial", api_name="/segment_volume")
    assert "mL" in text and all(nib.load(f).shape == image.shape for f in files)


def bad(client, path, **kwargs) -> str:
    with pytest.raises(AppError) as err:
        segment(client, path, **kwargs)
    return str(err.value)


@pytest.mark.slow
def test_bad_inputs_get_plain_messages_and_the_app_keeps_serving(client, tmp_path):
    (tmp_path / "notes.txt").write_text("this is not an image")
    assert "not an image" in bad(client, tmp_path / "notes.txt")
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in bad(client, tmp_path / "empty.png")
    (tmp_path / "cut.png").write_bytes(EXAMPLE.read_bytes()[:200])
    assert "could not be read" in bad(client, tmp_path / "cut.png")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 20)
    assert "DICOM" in bad(client, tmp_path / "broken.dcm")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), tmp_path / "series.nii.gz")
    assert "4D" in bad(client, tmp_path / "series.nii.gz")
    Image.new("1", (20_000, 20_000)).save(tmp_path / "huge.png")
    assert "too large" in bad(client, tmp_path / "huge.png")
    zeros = nib.Nifti1Image(np.zeros((600, 600, 200), np.uint8), np.eye(4))  # 72 million voxels in 0.3 MB of gzip
    nib.save(zeros, tmp_path / "unpacks_big.nii.gz")
    assert "too large" in bad(client, tmp_path / "unpacks_big.nii.gz")
    nan = np.full((64, 64), np.nan, dtype=np.float32)
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    assert "NaN" in bad(client, tmp_path / "nan.tif")
    assert Image.open(segment(client, EXAMPLE)[0]).size == Image.open(EXAMPLE).size  # still serving


@pytest.mark.slow
def test_a_ground_truth_mask_that_cannot_serve_is_explained_and_the_segmentation_still_shown(client, tmp_path):
    truth = np.asarray(Image.open(EXAMPLES / "vb2_07_sagittal_042_hemangioma.png"))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    label_map = (truth > 0).astype(np.uint8) * 2
    label_map[:5] = 1  # a third value: another structure, as in a label map
    Image.fromarray(label_map).save(tmp_path / "label_map.png")
    Image.fromarray(truth).convert("L").save(tmp_path / "lossy.jpg", quality=50)
    for name, reason in [("small.png", "same size"), ("label_map.png", "not binary"), ("lossy.jpg", "JPEG")]:
        picture, _, _, _, truth_table, errors, _, summary = segment(
            client, EXAMPLE, truth=handle_file(str(tmp_path / name))
        )
        assert Image.open(picture).size == Image.open(EXAMPLE).size, name  # the segmentation is shown
        assert "ground-truth mask was not used" in summary and reason in summary, name
        assert errors is None and truth_table["data"] in ([], [[None, None]], [["", ""]]), name
    # Two values are a mask, whichever they are: 0/1 scores as 0/255.
    Image.fromarray((truth > 0).astype(np.uint8)).save(tmp_path / "zero_one.png")
    scores = [
        segment(client, EXAMPLE, truth=handle_file(str(t)))[4]["data"]
        for t in (tmp_path / "zero_one.png", EXAMPLES / "vb2_07_sagittal_042_hemangioma.png")
    ]
    assert scores[0] == scores[1] and scores[0]


def test_lesion_table_numbers_on_a_hand_built_prediction():
    body = np.zeros((40, 40), np.float32)
    body[10:20, 10:20] = 1  # a 10 x 10 vertebral body
    lesion = np.zeros((40, 40), np.float32)
    lesion[12:16, 12:16] = 1  # 4 x 4 inside it
    lesion[30:32, 0:3] = 1  # 2 x 3 at the left border, outside any body
    rows = lesion_rows(Prediction({"vertebral_body": body, "hemangioma": lesion}, 0.5, spacing=(0.5, 0.5)))
    assert [row[0] for row in rows] == [1, 2]
    assert rows[0][1] == "4.0 mm²" and rows[0][3] == "16 %" and rows[0][4] == ""
    assert float(rows[0][2].split()[0]) == pytest.approx(np.hypot(2.0, 2.0), abs=0.75)
    assert rows[1][1] == "1.5 mm²" and rows[1][3] == "n/a" and "border" in rows[1][4]


def test_a_seed_threshold_leaves_out_faint_lesions_and_the_summary_says_so():
    lesion = np.zeros((40, 40), np.float32)
    lesion[12:16, 12:16] = 0.97  # confident
    lesion[30:32, 5:8] = 0.6  # faint
    prediction = Prediction({"hemangioma": lesion}, 0.5, seeds={"hemangioma": 0.9})
    assert [row[1] for row in lesion_rows(prediction)] == ["16.0 px²"]
    torch.manual_seed(0)
    model = UNet(1, 2, 4, labels=["vertebral_body", "hemangioma"], seed_thresholds={"hemangioma": 0.9})
    app = App(Segmenter(model, "a seeded model"))
    assert "a lesion is kept where some pixel reaches 0.9" in app.segment(str(EXAMPLE))[7]
    assert "reaches" not in app.segment(str(EXAMPLE), threshold=0.95)[7]  # at or above the seed it does nothing


def test_the_page_offers_two_api_endpoints_and_keeps_its_own_events_private():
    torch.manual_seed(0)
    demo = build_app(Segmenter(UNet(1, 2, 4, labels=["vertebral_body", "hemangioma"]), "a tiny model"))
    public = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert public == {"segment", "segment_volume"}  # sliders and redraws are the page's, not the API's
    assert any(fn.api_name == "load_example" for fn in demo.fns.values())  # the examples load on click


def test_the_summary_says_which_pixel_size_was_used_and_a_given_one_wins(tmp_path):
    app = App(Segmenter.load())  # the bundled model: a physical contract, which estimates a PNG's pixel size
    summary = app.segment(str(EXAMPLE))[7]
    assert "mm (estimated by the model)" in summary and "mm²" in summary
    assert "pixel size 0.9 x 0.9 mm (as given)" in app.segment(str(EXAMPLE), pixel_size=0.9)[7]
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(synthetic_ras()[0], np.diag([0.8, 0.8, 0.8, 1.0])), path)
    assert "pixel size 0.8 x 0.8 mm (from the file)" in app.segment(str(path), plane="axial", pixel_size=0)[7]


def tiny_app(tmp_path) -> App:
    torch.manual_seed(0)
    model = UNet(1, 2, 4, labels=["vertebral_body", "hemangioma"])
    return App(Segmenter(model, "a tiny model"), Storage(tmp_path / "storage"))


def test_text_from_files_reaches_the_page_escaped(tmp_path):
    app = tiny_app(tmp_path)
    named = tmp_path / "<img src=x onerror=alert(1)>.png"
    named.write_bytes(EXAMPLE.read_bytes())
    summary = app.segment(str(named))[7]
    assert re.search(r"(?<!\\)<", summary) is None and "\\<img src=x onerror=alert(1)\\>" in summary
    path = dicom_slice(tmp_path / "m.dcm", np.zeros((8, 8)), PhotometricInterpretation=("LO", "<b>x</b>"))
    with pytest.raises(gr.Error) as refused:
        app.segment(str(path))
    assert "<b>" not in refused.value.message and "&lt;b&gt;x&lt;/b&gt;" in refused.value.message
    assert refused.value.print_exception is False  # a user's bad file is no fault of the server: no traceback


def test_a_result_waits_on_disk_in_its_session_and_sliders_redraw_from_it(tmp_path):
    app = tiny_app(tmp_path)
    outputs = app.segment(str(EXAMPLE))
    stored = outputs[-1]
    assert isinstance(stored, StoredResult) and stored.path.exists() and stored.path.stat().st_size > 0
    again = app.redraw(stored, 0.3, 0.45, False, None)
    assert np.asarray(again[0]).shape == np.asarray(outputs[0]).shape and again[-1] is stored  # not stored again
    assert len(app.restyle(stored, 0.3, 0.9, True)) == 2
    app.segment(str(EXAMPLE))  # the session's next result replaces it
    assert not stored.path.exists()
    with pytest.raises(gr.Error, match="no longer kept"):
        app.redraw(stored, 0.3, 0.45, False, None)


def test_two_masks_of_a_long_name_download_under_two_names(tmp_path):
    named = tmp_path / ("n" * 246 + ".png")
    named.write_bytes(EXAMPLE.read_bytes())
    downloads = tiny_app(tmp_path).segment(str(named))[6]
    names = [os.path.basename(f) for f in downloads]
    assert len(set(names)) == 3 and all(len(name.encode()) < 200 for name in names)


def test_a_ground_truth_of_all_lesion_is_not_scored(tmp_path):
    Image.fromarray(np.full(Image.open(EXAMPLE).size[::-1], 255, np.uint8)).save(tmp_path / "all.png")
    outputs = tiny_app(tmp_path).segment(str(EXAMPLE), truth=str(tmp_path / "all.png"))
    assert outputs[4] == [] and "marks every pixel as lesion" in outputs[7]


def test_a_whole_volume_reports_its_progress_and_stops_at_its_time_budget(tmp_path, monkeypatch):
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(synthetic_ras()[0], np.diag([1.0, 1.0, 2.0, 1.0])), path)
    app = tiny_app(tmp_path)
    steps = list(app.segment_volume(str(path), "axial"))
    depth = nib.load(path).shape[2]
    assert [text for text, _ in steps[:-1]][-1] == f"Segmenting the axial slices: {depth} of {depth} done."
    summary, files = steps[-1]
    assert "mL" in summary and all(nib.load(f).shape == nib.load(path).shape for f in files)
    monkeypatch.setattr(ui, "VOLUME_BUDGET_S", 0.0)
    with pytest.raises(gr.Error, match="Stopped after 0 s at slice 8"):
        list(app.segment_volume(str(path), "axial"))


def test_a_multi_frame_dicom_brings_the_slider_and_segments_the_chosen_frame(tmp_path):
    path = get_testdata_file("rtdose.dcm")  # 15 axial frames
    app = tiny_app(tmp_path)
    slider = app.volume_slider(path, "auto")
    assert slider["visible"] and slider["maximum"] == 14 and slider["value"] == 7
    summary = app.segment(path, slice_index=3)[7]
    assert "**rtdose\\_f004**" in summary or "**rtdose_f004**" in summary
    assert "plane axial" in summary and "pixel size 10 x 10 mm (from the file)" in summary
