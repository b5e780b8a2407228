"""The stress campaign against a real server of the tiny model: every hostile upload refused in words or segmented,
the app serving after each; many clients without cross-talk; no file left after SIGTERM, and a killed app's files
swept by the next. Times and memory are the campaign's to report (docs/app.md), not these tests'."""

import pytest
from conftest import EXAMPLE

from hemseg.lab.hostile import build
from hemseg.lab.stress import hostile_part, load_part, privacy_part, served


@pytest.mark.slow
def test_every_hostile_upload_is_refused_in_words_or_segmented_and_the_app_keeps_serving(trained_model, tmp_path):
    cases = build(tmp_path / "files", EXAMPLE)
    with served(str(trained_model), tmp_path / "app") as app:
        rows = hostile_part(app, cases, EXAMPLE)
        load = load_part(app, tmp_path, clients=6, requests=2)[0]
    assert len(rows) >= 30
    assert [row for row in rows if row["outcome"].startswith("WRONG") or not row["still_serving"]] == []
    assert load["errors"] == 0 and load["masks_unlike_solo"] == 0
    assert "Traceback" not in app.log.read_text()  # a user's bad file is not logged as a fault of the server


@pytest.mark.slow
def test_no_upload_or_result_outlives_sigterm_and_a_killed_apps_files_are_swept(trained_model, tmp_path):
    term, kill = privacy_part(str(trained_model), tmp_path, EXAMPLE)
    assert term["files_before"] > 0 and term["files_after"] == 0
    assert term["folder_modes"] == "0o700"  # no other user can reach a file
    assert kill["files_after_kill"] > 0 and kill["orphans_after"] == 0
