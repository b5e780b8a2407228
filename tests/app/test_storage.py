"""The app's private folders: what a sweep removes, and the retention setting."""

import os
import subprocess
import sys
import time

import pytest

from hemseg.app.storage import RETENTION_VARIABLE, Storage, retention_s


def aged(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"scan")
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_sweep_removes_what_passed_the_retention_time_here_and_where_a_process_died(tmp_path):
    storage = Storage(tmp_path, retention=60)
    assert oct(storage.folder.stat().st_mode & 0o777) == "0o700" and storage.folder.name.startswith(f"{os.getpid()}-")
    own_old = aged(storage.session("abc") / "x" / "old_mask.png", 120)
    own_new = aged(storage.session("abc") / "y" / "new_mask.png", 10)
    orphan = tmp_path / f"{dead_pid()}-killed"
    orphan_old, orphan_new = aged(orphan / "gradio" / "scan.nii.gz", 120), aged(orphan / "results" / "m.png", 10)
    legacy = aged(tmp_path / "tmpabc123" / "mask.png", 120)  # an older app's folder, without a pid
    alive = aged(tmp_path / f"{os.getppid()}-running" / "scan.dcm", 120)  # another app, still running: its own
    storage.sweep()
    assert not own_old.exists() and own_new.exists()
    assert not orphan_old.exists() and orphan_new.exists()
    assert not legacy.exists() and not legacy.parent.exists()
    assert alive.exists()
    orphan_new.unlink()
    storage.sweep()
    assert not orphan.exists()  # a dead process's folder goes once empty


def test_a_closed_session_loses_its_results_at_once(tmp_path):
    storage = Storage(tmp_path, retention=3600)
    kept = aged(storage.session("closed") / "r" / "mask.png", 0)
    other = aged(storage.session("open") / "r" / "mask.png", 0)
    storage.forget("closed")
    assert not kept.exists() and other.exists()


def test_the_retention_time_is_a_setting_in_minutes(monkeypatch):
    monkeypatch.delenv(RETENTION_VARIABLE, raising=False)
    assert retention_s() == 3600
    monkeypatch.setenv(RETENTION_VARIABLE, "2.5")
    assert retention_s() == 150
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv(RETENTION_VARIABLE, bad)
        with pytest.raises(ValueError, match="must be a number of minutes above 0"):
            retention_s()
