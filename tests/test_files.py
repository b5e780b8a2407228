import csv
import os
import stat
import subprocess
import sys

import pytest

from hemseg.files import atomic_folder, replace_file, write_csv, write_failure


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


def test_a_file_is_replaced_whole_or_left_as_it_was(tmp_path):
    path = tmp_path / "mask.png"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), replace_file(path) as tmp:
        tmp.write_bytes(b"ha")
        raise KeyboardInterrupt  # Ctrl-C halfway through
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["mask.png"]
    with replace_file(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"


def test_what_a_killed_writer_left_half_written_is_cleared_and_a_running_ones_kept(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    dead = tmp_path / f".model.partial-{process.pid}-abc"
    dead.mkdir()
    (dead / "weights").write_text("half")
    (tmp_path / f".table.csv.partial-{process.pid}-def").write_text("half")
    running = tmp_path / f".other.partial-{os.getpid()}-ghi"  # this process: still at work
    running.mkdir()
    with atomic_folder(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", running.name])


def test_a_full_disk_is_said_as_such_with_the_path(tmp_path, small_disk):
    disk = small_disk("64k")
    path = disk / "big.bin"
    with pytest.raises(OSError) as full, replace_file(path) as tmp:
        tmp.write_bytes(bytes(2**20))
    assert write_failure(full.value, path) == f"no space left on device writing {path}"
    assert list(disk.iterdir()) == []  # the partial file is gone
    # torch reports a full disk without an errno ("basic_ios::clear: iostream error"): told by the free space
    assert write_failure(RuntimeError("iostream error"), path).startswith(f"no space left on device writing {path}")
    assert write_failure(RuntimeError("bad"), tmp_path / "x") == f"could not write {tmp_path / 'x'}: bad"
