"""Writing output folders so that an interrupted run never leaves one that looks finished, and CSV tables."""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``out``; when the block ends normally it replaces ``out``, when it
    fails (or is interrupted) it is removed and ``out`` is left as it was.

    The folder gets the usual permissions (``mkdir`` under the umask; ``tempfile.mkdtemp``'s would be private). An
    old ``out`` is renamed aside before the new one takes its name and deleted after: an interruption between the
    two renames leaves it whole as ``.<name>.old-*``, never half deleted.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique_sibling(out, "partial")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = _unique_sibling(out, "old")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def _unique_sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{uuid.uuid4().hex[:12]}")


def write_csv(path: Path, rows: Iterable[Mapping], fieldnames: list[str] | None = None) -> Path:
    """One header row (``fieldnames``, else every key of the rows in the order first seen), then one line per
    row; a key a row lacks is left empty. Written to a temporary file and renamed, so the file is whole or old."""
    rows = list(rows)
    tmp = _unique_sibling(path, "partial")
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames or list(dict.fromkeys(k for row in rows for k in row)))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
