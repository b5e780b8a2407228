import csv

import pytest
from conftest import run

from hemseg.evaluation.seeds import SEED_CANDIDATES


def test_calibrate_command_prints_and_writes_the_table(trained_model, tiny_slices, tmp_path):
    out = tmp_path / "seeds.csv"
    model_and_data = ["--model", str(trained_model), "--data", str(tiny_slices), "--split", "val"]
    result = run(["-m", "hemseg", "lab", "calibrate", *model_and_data, "--csv", str(out)])
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
