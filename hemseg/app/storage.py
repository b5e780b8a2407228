"""Where the app keeps what users send and get back: one private folder per process, removed when the process ends,
and whatever a killed process left swept away once it is older than the retention time.

It imports no Gradio: the app claims its folder first, so that Gradio, which reads ``GRADIO_TEMP_DIR`` when it is
imported, puts its uploads there too.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from hemseg.files import process_running

ROOT = Path(tempfile.gettempdir()) / "hemseg-app"
RETENTION_VARIABLE = "HEMSEG_RETENTION_MIN"
DEFAULT_RETENTION_MIN = 60.0
SWEEP_EVERY_S = 20.0


def retention_s() -> float:
    """How long uploads and results are kept: $HEMSEG_RETENTION_MIN minutes, 60 when unset."""
    raw = os.environ.get(RETENTION_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_RETENTION_MIN * 60
    try:
        minutes = float(raw)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"{RETENTION_VARIABLE} must be a number of minutes above 0, got {raw!r}")
    return minutes * 60


class Storage:
    """One process's private folder (0700) under ROOT, named ``<pid>-<random>``: uploads (``gradio/``, Gradio's
    own) and results (``results/<session>/``).

    As a context manager it holds the folder for the app's life: files are created private (umask 077), SIGTERM
    ends the app as Ctrl-C does, a thread sweeps every SWEEP_EVERY_S seconds, and on the way out, normal or by
    SIGTERM, the folder is removed. Only ``kill -9`` leaves it: the next app's sweeps remove it once older than
    the retention time.
    """

    def __init__(self, root: Path = ROOT, retention: float | None = None) -> None:
        self.root = root
        self.retention = retention_s() if retention is None else retention
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))  # mkdtemp: 0700
        self.uploads = self.folder / "gradio"
        self.results = self.folder / "results"
        self._stop = threading.Event()

    def __enter__(self) -> Storage:
        os.umask(0o077)
        os.environ["GRADIO_TEMP_DIR"] = str(self.uploads)
        signal.signal(signal.SIGTERM, _interrupt)
        self.sweep()
        threading.Thread(target=self._sweep_until_stopped, name="hemseg-sweeper", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def session(self, session: str) -> Path:
        """A session's results folder, made on first use."""
        folder = self.results / (session or "anonymous")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def forget(self, session: str) -> None:
        """Remove a session's results: its tab was closed."""
        shutil.rmtree(self.results / (session or "anonymous"), ignore_errors=True)

    def sweep(self) -> None:
        """Remove files older than the retention time, here and in the folders of processes that are gone; a gone
        process's folder goes once empty. Another running app's folder is its own to sweep."""
        cutoff = time.time() - self.retention
        for folder in self.root.iterdir():
            owner = folder.name.split("-")[0]
            mine = folder == self.folder
            # A folder without a pid in its name is an older app's (and so a dead one's).
            if not folder.is_dir() or (not mine and owner.isdigit() and process_running(int(owner))):
                continue
            _remove_older(folder, cutoff, every_empty_folder=not mine)
            if not mine and not any(folder.iterdir()):
                folder.rmdir()

    def _sweep_until_stopped(self) -> None:
        while not self._stop.wait(SWEEP_EVERY_S):
            self.sweep()


def _remove_older(folder: Path, cutoff: float, *, every_empty_folder: bool) -> None:
    """Files under ``folder`` last changed before ``cutoff``, then the folders left empty: every one when the
    process is gone; else only those unchanged since ``cutoff`` (a new one may be about to receive its file)."""
    for parent, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = Path(parent, name)
            try:
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:  # removed meanwhile by its session or by Gradio
                pass
        for name in dirs:
            path = Path(parent, name)
            try:
                if not any(path.iterdir()) and (every_empty_folder or path.lstat().st_mtime < cutoff):
                    path.rmdir()
            except OSError:  # removed meanwhile, or a file arrived
                pass


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (a container stopping, ``kill``) taken as Ctrl-C: Gradio closes its server and the app cleans up."""
    raise KeyboardInterrupt
