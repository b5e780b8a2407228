import csv
import json

import numpy as np
import pytest
from conftest import run

from hemseg import UNet
from hemseg.calibrate import SEED_CANDIDATES, choose_seeds
from hemseg.inference import Prediction, cut


def two_components() -> np.ndarray:
    """A confident component (peak 0.97, with a pixel joined only diagonally) and a faint one (peak 0.7)."""
    p = np.zeros((8, 8), dtype=np.float32)
    p[1:3, 1:3] = [[0.97, 0.8], [0.6, 0.55]]
    p[3, 3] = 0.6  # touches the first component at a corner only
    p[6, 5:7] = [0.7, 0.52]
    p[5, 0] = 0.4  # below the threshold: never in the mask
    return p


def test_cut_keeps_whole_components_that_reach_the_seed():
    p = two_components()
    plain = cut(p, 0.5)
    assert plain.sum() == 7 and not plain[5, 0]
    seeded = cut(p, 0.5, seed=0.9)
    assert seeded.sum() == 5 and seeded[3, 3]  # the diagonal pixel belongs to the confident lesion (8-connected)
    assert not seeded[6, 5:7].any()  # the faint lesion is dropped, all of it
    assert cut(p, 0.5, seed=0.7).sum() == 7  # the seed is inclusive, like the threshold
    assert cut(p, 0.5, seed=0.98).sum() == 0
    assert np.array_equal(cut(p, 0.5, seed=0.3), plain)  # a seed at or below the threshold changes nothing
    assert not cut(np.zeros((4, 4)), 0.5, seed=0.9).any()


def test_prediction_applies_the_seed_of_each_label_and_keeps_it_for_other_thresholds():
    p = two_components()
    prediction = Prediction({"vertebral_body": p, "hemangioma": p}, 0.5, seeds={"hemangioma": 0.9})
    assert prediction.masks["vertebral_body"].sum() == 7 and prediction.masks["hemangioma"].sum() == 5
    assert prediction.count("vertebral_body") == 2 and prediction.count("hemangioma") == 1
    lower = prediction.with_threshold(0.45)
    assert lower.seeds == {"hemangioma": 0.9} and lower.masks["hemangioma"].sum() == 5


def test_seed_thresholds_travel_in_the_config(tmp_path):
    model = UNet(1, 2, 4, labels=["vertebral_body", "hemangioma"], seed_thresholds={"hemangioma": 0.99})
    model.save_pretrained(tmp_path)
    assert UNet.from_pretrained(tmp_path).seed_thresholds == {"hemangioma": 0.99}
    config = json.loads((tmp_path / "config.json").read_text())
    del config["seed_thresholds"]  # as configs were written before seeds existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert UNet.from_pretrained(tmp_path).seed_thresholds == {}
    with pytest.raises(ValueError, match="not among the labels"):
        UNet(1, 1, 4, seed_thresholds={"vertebral_body": 0.9})
    with pytest.raises(ValueError, match="at most 1"):
        UNet(1, 1, 4, seed_thresholds={"hemangioma": 1.5})


def row(label, seed, pooled):
    return {"label": label, "seed": seed, "pooled_dice": pooled}


def test_choose_seeds_takes_the_highest_pooled_dice_and_the_lower_seed_on_a_tie():
    table = [
        row("hemangioma", None, 0.60),
        row("hemangioma", 0.9, 0.64),
        row("hemangioma", 0.95, 0.66),
        row("hemangioma", 0.99, 0.66),
        row("vertebral_body", None, 0.88),
        row("vertebral_body", 0.9, 0.88),  # no better than no seed: no seed
        row("vertebral_body", 0.95, 0.87),
        row("nothing", 0.9, 0.0),  # in any order
        row("nothing", None, 0.0),
        row("everywhere", 0.9, 1.0),  # empty truth and prediction everywhere score 1: no seed needed
        row("everywhere", None, 1.0),
    ]
    assert choose_seeds(table) == {"hemangioma": 0.95}


def test_calibrate_command_prints_and_writes_the_table(trained_model, tiny_slices, tmp_path):
    out = tmp_path / "seeds.csv"
    model_and_data = ["--model", str(trained_model), "--data", str(tiny_slices), "--split", "val"]
    result = run(["-m", "hemseg", "calibrate", *model_and_data, "--csv", str(out)])
    with open(out) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 * (1 + len(SEED_CANDIDATES))
    assert [r["seed"] for r in table[: 1 + len(SEED_CANDIDATES)]] == ["", *map(str, SEED_CANDIDATES)]
    assert "| vertebral_body | none |" in result.stdout and "| hemangioma | 0.999 |" in result.stdout
    # The row without a seed is what `evaluate` reports for the same model and split.
    run(["-m", "hemseg", "evaluate", *model_and_data, "--out", str(tmp_path / "r")])
    with open(tmp_path / "r" / "metrics.csv") as f:
        overall = {r["label"]: r for r in csv.DictReader(f) if r["plane"] == "overall"}
    plain_rows = {r["label"]: r for r in table if r["seed"] == ""}
    assert float(plain_rows["hemangioma"]["pooled_dice"]) > 0  # so the comparison is not one of empty scores
    for label, plain in plain_rows.items():
        for key in ("dice_fg", "pooled_dice", "slice_false_alarm_rate", "lesion_f1"):
            assert float(plain[key]) == pytest.approx(float(overall[label][key]), nan_ok=True)
