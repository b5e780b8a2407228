import csv
import os
import stat

import pytest

from hemseg.files import atomic_folder, write_csv


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_folder_is_readable_by_others_and_leaves_nothing_beside_it(tmp_path, umask_022):
    out = tmp_path / "model"
    with atomic_folder(out) as tmp:
        (tmp / "weights").write_text("new")
        assert not out.exists()  # nothing that looks finished until the block ends
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # as mkdir under the umask, not mkdtemp's private 0700
    assert (out / "weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_folder_replaces_an_old_folder_whole_and_keeps_it_when_the_block_fails(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old-only").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_folder(out) as tmp:
        (tmp / "weights").write_text("half")
        raise KeyboardInterrupt  # as an interrupted run
    assert sorted(p.name for p in out.iterdir()) == ["old-only"]
    with atomic_folder(out) as tmp:
        (tmp / "weights").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["weights"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_write_csv_takes_every_key_and_never_leaves_a_truncated_table(tmp_path):
    path = tmp_path / "log.csv"
    write_csv(path, [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "noisy": 0.7}])
    with open(path, newline="") as f:
        assert list(csv.DictReader(f)) == [
            {"epoch": "1", "loss": "0.5", "noisy": ""},
            {"epoch": "2", "loss": "", "noisy": "0.7"},
        ]
    before = path.read_text()
    with pytest.raises(ValueError):  # a row with a column the header lacks fails midway
        write_csv(path, [{"epoch": 3}, {"epoch": 4, "extra": 1}], fieldnames=["epoch"])
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]
