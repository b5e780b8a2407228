"""Serving the app: `python app.py` (or `python -m hemseg.app.serve`) claims the process's private folder, then
builds and launches the page; Ctrl-C and SIGTERM stop it and remove the folder."""

from __future__ import annotations

import os

import torch

from hemseg.app.storage import Storage
from hemseg.speed import cpu_cores

MAX_UPLOAD = "100mb"
WORKERS_VARIABLE = "HEMSEG_WORKERS"


def workers() -> int:
    """How many slice requests run at once: $HEMSEG_WORKERS, else one per core (docs/app.md measures why)."""
    raw = os.environ.get(WORKERS_VARIABLE, "").strip()
    if not raw:
        return cpu_cores()
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{WORKERS_VARIABLE} must be a whole number above 0, got {raw!r}")
    return int(raw)


def main() -> None:
    count = workers()
    with Storage() as storage:
        # Imported once the folder is claimed: Gradio takes its upload folder from GRADIO_TEMP_DIR on import.
        from hemseg.app.ui import build_app

        # The cores shared among the requests that run at once, not each request's threads on every core.
        torch.set_num_threads(max(1, cpu_cores() // count))
        build_app(storage=storage, workers=count).launch(max_file_size=MAX_UPLOAD, share=False)


if __name__ == "__main__":
    main()
