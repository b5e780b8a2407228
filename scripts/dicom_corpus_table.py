"""The table of docs/evaluation.md's DICOM section: every file directly in a folder (default: the test files that
pydicom ships), its transfer syntax, and whether `hemseg predict` segments it or why not.

    python scripts/dicom_corpus_table.py [FOLDER] > table.md
"""

from __future__ import annotations

import csv
import sys
import tempfile
import warnings
from pathlib import Path

import pydicom
import pydicom.data

from hemseg.inference.predict import predict_files
from hemseg.inference.segmenter import Segmenter


def transfer_syntax(path: Path) -> str:
    try:
        uid = pydicom.filereader.read_file_meta_info(path).get("TransferSyntaxUID")
    except Exception:  # noqa: BLE001 - any file at all: what it is not is the table's to say
        return "none (no meta header)"
    return uid.name if uid is not None else "none given"


def main() -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    files = sorted(p for p in folder.iterdir() if p.is_file())
    warnings.simplefilter("ignore")  # pydicom warns about the odd values these files hold on purpose
    with tempfile.TemporaryDirectory() as out:
        table, _ = predict_files(Segmenter.load(), files, Path(out))
        with open(table) as f:
            rows = {Path(row["file"]).name: row for row in csv.DictReader(f)}
    print("| file | transfer syntax | outcome | reason |\n| --- | --- | --- | --- |")
    for path in files:
        row = rows[path.name]
        outcome = "refused" if row["error"] else f"segmented ({row['height']} x {row['width']})"
        reason = row["error"].replace("|", "/")
        print(f"| {path.name} | {transfer_syntax(path)} | {outcome} | {reason} |")
    done = sum(not row["error"] for row in rows.values())
    print(f"\n{done} of {len(files)} files segmented.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
