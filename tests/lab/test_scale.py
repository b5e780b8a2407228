"""`hemseg lab scale`: the pixel-size estimate against the truth, on slices of known pixel size."""

import pytest
from conftest import run

from hemseg import Segmenter
from hemseg.data.dataset import load
from hemseg.lab.scale import scale_table


def test_the_table_has_a_row_per_zoom_and_a_square_grid_model_is_refused(trained_model, tiny_slices):
    table = scale_table(Segmenter.load(), load(tiny_slices), "val", slices=3, zooms=(1.0, 2.0))
    assert [row["zoom"] for row in table] == [1.0, 2.0] and all(row["slices"] == 3 for row in table)
    assert all(0 <= row["within_15"] <= row["within_30"] <= 1 and row["median_ratio"] > 0 for row in table)
    with pytest.raises(ValueError, match="no pixel size to estimate"):
        scale_table(Segmenter.load(trained_model), load(tiny_slices), "val", slices=3)
    result = run(["-m", "hemseg", "lab", "scale", "--data", str(tiny_slices), "--slices", "2"])
    assert "| zoom | slices | median estimate / truth |" in result.stdout and "scale_bias 1.1" in result.stdout
