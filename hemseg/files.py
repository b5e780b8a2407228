"""Writing files and folders so that an interruption or a full disk never leaves one half written, and saying in
words what went wrong; CSV tables."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

FULL_DISK_BYTES = 64 * 2**20  # torch's writer reports a full disk as "basic_ios::clear: iostream error"


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``out``; when the block ends normally it replaces ``out``, when it
    fails (or is interrupted) it is removed and ``out`` is left as it was.

    The folder gets the usual permissions (``mkdir`` under the umask; ``tempfile.mkdtemp``'s would be private). An
    old ``out`` is renamed aside before the new one takes its name and deleted after: an interruption between the
    two renames leaves it whole as ``.<name>.old-*``, never half deleted. What a killed process left half written
    beside ``out`` is removed first (``clear_partials``).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    clear_partials(out.parent)
    tmp = _partial(out)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:12]}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


@contextmanager
def replace_file(path: Path) -> Iterator[Path]:
    """Yield a hidden temporary name beside ``path`` to write to; it becomes ``path`` when the block ends normally
    and is removed when it fails or is interrupted, so ``path`` is whole: the new file or the old one."""
    tmp = _partial(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _partial(path: Path) -> Path:
    """``.<name>.partial-<pid>-<random>``: the pid tells a later run whether the writer is still at work."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def clear_partials(folder: Path) -> None:
    """Remove the half-written files and folders in ``folder`` of processes that have ended (killed while writing:
    nothing else leaves them)."""
    for entry in folder.glob(".*.partial-*"):
        pid = entry.name.rsplit(".partial-", 1)[1].split("-")[0]
        if not pid.isdigit() or process_running(int(pid)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def write_failure(err: BaseException, path: Path) -> str:
    """Why writing ``path`` failed, in words: a full disk said as such, with the path."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return f"no space left on device writing {path}"
    folder = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    free = shutil.disk_usage(folder).free
    if free < FULL_DISK_BYTES:
        return f"no space left on device writing {path} ({free / 2**20:.1f} MB free; {err})"
    return f"could not write {path}: {err}"


def write_csv(path: Path, rows: Iterable[Mapping], fieldnames: list[str] | None = None) -> Path:
    """One header row (``fieldnames``, else every key of the rows in the order first seen), then one line per
    row; a key a row lacks is left empty. Written to a temporary file and renamed, so the file is whole or old."""
    rows = list(rows)
    with replace_file(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path
