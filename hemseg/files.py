"""Writing output folders so that an interrupted run never leaves one that looks finished, and CSV tables."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``out``; when the block ends normally it replaces ``out``, when it
    fails (or is interrupted) it is removed and ``out`` is left as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def write_csv(path: Path, rows: Iterable[Mapping], fieldnames: list[str] | None = None) -> Path:
    """One header row (``fieldnames``, else every key of the rows in the order first seen), then one line per
    row; a key a row lacks is left empty."""
    rows = list(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path
