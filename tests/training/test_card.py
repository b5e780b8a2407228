"""The model card's words about the data a model was trained on."""

import json

from conftest import REPO

from hemseg.training.card import data_description, data_limits, data_note, write_model_card
from hemseg.training.recipe import Recipe


def test_card_limits_describe_the_project_data_only_when_it_trained_on_them(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"sources": ["../shared/data/spine-mri"], "seed": 3}))
    info = data_description(str(tmp_path))
    assert "lumbar spine MRI of healthy adults" in data_limits(info)
    assert f"Slice folder `{tmp_path.name}`" in data_note(str(tmp_path), info) and "seed 3" in data_note(
        str(tmp_path), info
    )
    (tmp_path / "dataset.json").write_text(json.dumps({"sources": ["/hospital/scans"]}))
    assert "Trained only on the data named under Training data" in data_limits(data_description(str(tmp_path)))
    assert data_description("someone/hub-dataset") is None
    assert "Trained only on" in data_limits(None) and "simulated" in data_note("someone/hub-dataset", None)


def test_the_bundled_card_is_what_the_card_module_writes_from_its_metrics(tmp_path):
    bundled = REPO / "hemseg" / "bundled_model"
    run = json.loads((bundled / "metrics.json").read_text())
    write_model_card(tmp_path, run, model_name="hemseg-unet16-physical")
    assert (tmp_path / "README.md").read_text() == (bundled / "README.md").read_text()
    card = (tmp_path / "README.md").read_text()
    assert run["notes"][0] in card and Recipe.from_dict(run["recipe"]).to_yaml() in card
    assert "Seed thresholds (hemangioma 0.98)" in card and "resampled to\n  1.25 mm pixels" in card
    assert "stopped by time limit" in card and "random tissue intensities on 0.3" in card
