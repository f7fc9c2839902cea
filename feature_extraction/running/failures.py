"""The errors report of an extraction folder: which slides failed, and why.

Each failure is one small JSON file, ``DIR/.extract_errors/<slide>.json``, written atomically by
the process that owns the slide and deleted when a later run extracts it. ``DIR/extract_errors.csv``
is rebuilt from those records, atomically, until the records no longer change underneath, so
processes that finish at the same time never leave a report missing anyone's failures. Both are
written under the folder's lock (:func:`feature_extraction.running.claims.folder_lock`), so a temporary
file a killed process left is recognised and swept.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from feature_extraction.running.claims import folder_lock
from mil_crcrs.atomic import write_csv, write_json

RECORDS_DIR = ".extract_errors"
REPORT_NAME = "extract_errors.csv"
COLUMNS = ["slide_id", "path", "reason", "message", "rank", "time_utc"]


def record_failure(
    out_dir: str | os.PathLike,
    slide_id: str,
    path: str | os.PathLike,
    reason: str,
    message: str,
    rank: int = 0,
) -> None:
    """Record that ``slide_id`` failed."""
    record = {
        "slide_id": slide_id,
        "path": str(path),
        "reason": reason,
        "message": message,
        "rank": rank,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with folder_lock(Path(out_dir)):
        write_json(Path(out_dir) / RECORDS_DIR / f"{slide_id}.json", record)


def clear_failure(out_dir: str | os.PathLike, slide_id: str) -> None:
    """Forget an earlier failure of ``slide_id`` (it has now been extracted)."""
    (Path(out_dir) / RECORDS_DIR / f"{slide_id}.json").unlink(missing_ok=True)


def read_failures(out_dir: str | os.PathLike) -> pd.DataFrame:
    """All recorded failures, one row per slide, sorted by slide id."""
    folder = Path(out_dir) / RECORDS_DIR
    rows = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                rows.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # deleted meanwhile by its owner
                continue
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values("slide_id", ignore_index=True)


def write_report(out_dir: str | os.PathLike, max_rounds: int = 20) -> Path:
    """Rebuild ``DIR/extract_errors.csv`` from the records; returns its path.

    Rewrites until a re-read after the write finds the same records, so the last process to
    write the report leaves one that holds every record written before it finished.
    """
    report = Path(out_dir) / REPORT_NAME
    with folder_lock(Path(out_dir)):
        frame = read_failures(out_dir)
        for _ in range(max_rounds):
            write_csv(report, frame)
            again = read_failures(out_dir)
            if again[["slide_id", "time_utc"]].equals(frame[["slide_id", "time_utc"]]):
                break
            frame = again
    return report
