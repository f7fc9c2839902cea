"""Cohort tables on disk: reading them, naming their columns, checking the outcome columns.

:func:`read_table` reads CSV (UTF-8 with or without BOM, or Latin-1; ``,``, ``;`` or tab) and
Excel ``.xlsx``; :class:`Columns` names the columns; :func:`join_slide_table` joins STAMP's
separate slide table to a clinical table; :func:`validate_outcome` checks a time and an event
column; :func:`event_from_censoring` turns CLAM/PORPOISE's ``censorship`` (1 = censored) into
an event column, and refuses an event column named like a censoring one.
:mod:`mil_crcrs.data.cohort` builds a :class:`~mil_crcrs.data.cohort.Cohort` from these.

Every problem raises :class:`~mil_crcrs.errors.InputError` naming the file, line or column.
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mil_crcrs.data.status import looks_like_censoring, read_status
from mil_crcrs.errors import InputError, first_line

#: Column names a peer uses for a censoring indicator (1 = censored), matched without case.
CENSOR_NAMES = ("censorship", "censored", "censor", "is_censored", "censoring", "cens")

#: TCGA's missing-value markers, as cBioPortal's TCGA clinical files hold them.
TCGA_MISSING = ("[Not Available]", "[Not Applicable]", "[Unknown]", "[Not Evaluated]",
                "[Discrepancy]")  # fmt: skip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Columns:
    """Names of the cohort table's columns (peers differ: map theirs here).

    Parameters
    ----------
    patient, slide, time : the patient id, slide id and follow-up time columns
    event : the event indicator, 1 = event observed, 0 = censored
    censor : a censoring indicator instead (1 = censored, CLAM's ``censorship``), inverted into
        the event; None = use ``event``, or a column named like ``censorship`` when the table
        has no ``event`` column
    """

    patient: str = "patient_id"
    slide: str = "slide_id"
    time: str = "time"
    event: str = "event"
    censor: str | None = None


#: The largest value a time column may hold, in any unit: far beyond any follow-up (simulated
#: cohorts reach 10^5 days in their tails), far below what breaks the statistics (1e300) or a
#: date read as nanoseconds (10^18).
MAX_TIME = 1e9

#: Words in a time column's name that say its unit (``survival_months``, ``OS_days``, ...).
UNIT_WORDS = {
    "days": ("day", "days"),
    "months": ("month", "months", "mo", "mos"),
    "years": ("year", "years", "yr", "yrs"),
}


def time_unit_from_name(name: object) -> str | None:
    """The unit a time column's name says (``survival_months`` -> "months", ``OS_days`` ->
    "days", ``dfs.years`` -> "years"), or None where it says none or several."""
    words = set(re.split(r"[^a-z]+", str(name).lower()))
    found = [unit for unit, spellings in UNIT_WORDS.items() if words & set(spellings)]
    return found[0] if len(found) == 1 else None


def table_line(index: int) -> str:
    """``"line N"`` for the row at ``index`` of a table read from a file."""
    # Line numbers as a spreadsheet or an editor shows them: the header is line 1.
    return f"line {index + 2}"


def _numeric_column(table: pd.DataFrame, column: str, source: str) -> pd.Series:
    dates = table[column].map(lambda v: isinstance(v, datetime.date | datetime.time))
    if table[column].dtype.kind in "mM" or dates.any():  # Excel date cells, read as datetimes
        i = int(np.flatnonzero(dates.to_numpy())[0]) if dates.any() else 0
        raise InputError(
            f"{source}, {table_line(i)}: column '{column}' holds a date ({table[column].iloc[i]}),"
            " not a number; give the follow-up as a duration (the days, months or years from"
            " diagnosis to the event or last contact)"
        )
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{source}, {table_line(i)}: column '{column}' has the non-numeric value "
            f"{table[column].iloc[i]!r}"
        )
    return values


def validate_outcome(
    table: pd.DataFrame, time_col: str, event_col: str, source: str
) -> pd.DataFrame:
    """Check and normalise a time and an event column; returns the table with clean copies.

    Times must be numeric, present and non-negative; events must be 0 or 1.
    """
    time = _numeric_column(table, time_col, source)
    if time.isna().any():
        i = int(np.flatnonzero(time.isna().to_numpy())[0])
        raise InputError(f"{source}, {table_line(i)}: column '{time_col}' is empty")
    if (time < 0).any():
        i = int(np.flatnonzero((time < 0).to_numpy())[0])
        raise InputError(
            f"{source}, {table_line(i)}: column '{time_col}' is negative ({time.iloc[i]})"
        )
    if not np.isfinite(time.to_numpy(dtype=float)).all():
        i = int(np.flatnonzero(~np.isfinite(time.to_numpy(dtype=float)))[0])
        raise InputError(f"{source}, {table_line(i)}: column '{time_col}' is not finite")
    if (time > MAX_TIME).any():
        i = int(np.flatnonzero((time > MAX_TIME).to_numpy())[0])
        raise InputError(
            f"{source}, {table_line(i)}: column '{time_col}' holds {time.iloc[i]:.6g}, not a "
            f"follow-up in days, months or years (at most {MAX_TIME:,.0f})"
        )
    event = _numeric_column(read_status(table, event_col, source), event_col, source)
    bad = ~event.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        value = table[event_col].iloc[i]
        value = value.item() if isinstance(value, np.generic) else value  # 2, not np.int64(2)
        raise InputError(
            f"{source}, {table_line(i)}: column '{event_col}' must be 0 (censored) or 1 (event), "
            f"got {value!r}"
        )
    out = table.copy()
    out[time_col] = time.astype(np.float64)
    out[event_col] = event.astype(np.int64)
    return out


def read_table(path: str | os.PathLike, id_columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read a CSV, TSV or Excel (``.xlsx``) table as strings-or-numbers.

    CSV text may be UTF-8 (with or without a byte-order mark, as Excel saves it) or Latin-1;
    the separator (``,``, ``;`` or tab) is taken from the header line. Column names are
    stripped of surrounding spaces. ``id_columns`` of a CSV are read as text, so that ids such
    as ``007`` and ``7`` stay distinct. Unreadable files, a header naming a column twice and
    NUL bytes (which would cut a cell short) raise :class:`InputError`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a table")
    if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
        table = _read_excel(path)
    else:
        table = _read_csv(path, tuple(id_columns))
    if table.empty:
        raise InputError(f"{path}: the table has no rows")
    table.columns = [c.strip() if isinstance(c, str) else c for c in table.columns]
    return table


def _read_excel(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".xls":
        raise InputError(f"{path}: old-style .xls workbooks are not read; save it as .xlsx or CSV")
    try:
        return pd.read_excel(path, sheet_name=0, engine="openpyxl")
    except ImportError:
        raise InputError(
            f"{path}: reading Excel tables needs openpyxl (pip install openpyxl)"
        ) from None
    except Exception as exc:  # openpyxl raises zipfile, KeyError, ValueError ... for bad files
        raise InputError(
            f"{path}: not a readable Excel workbook ({exc.__class__.__name__})"
        ) from None


def _read_csv(path: Path, id_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if b"\0" in raw:  # pandas would cut the cell short there: refuse rather than misread
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise InputError(
            f"{path}, line {line}: a NUL byte; not a text table (UTF-16? save it as UTF-8 CSV)"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        log.info("%s: not UTF-8; read as Latin-1", path)
    text = _skip_comment_lines(text, path)
    if path.suffix.lower() in (".tsv", ".tab"):
        sep = "\t"
    else:
        header = text.split("\n", 1)[0]
        sep = max((",", ";", "\t"), key=header.count) if header.strip() else ","
    try:
        raw_names = pd.read_csv(
            io.StringIO(text), sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False
        ).iloc[0]
        names = [str(name).strip() for name in raw_names]
        twice = sorted({name for name in names if name and names.count(name) > 1})
        if twice:  # pandas would rename the second one 'name.1', a silent new covariate
            raise InputError(f"{path}: the header names column {twice[0]!r} more than once")
        as_text = {
            raw: str for raw, name in zip(raw_names, names, strict=True) if name in id_columns
        }
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=as_text, na_values=TCGA_MISSING)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({first_line(exc)})") from None


def _skip_comment_lines(text: str, path: Path) -> str:
    """The text without its leading ``#`` lines (cBioPortal's four header lines), noted once."""
    lines = text.split("\n")
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    if not n:
        return text
    log.info(
        "%s: %d leading '#' line(s) skipped (cBioPortal header); line numbers in messages count "
        "from the column-name line",
        path,
        n,
    )
    return "\n".join(lines[n:])


def event_from_censoring(table: pd.DataFrame, columns: Columns, source: str) -> Columns:
    """Resolve which column gives the event; a censoring column becomes ``event`` (inverted).

    Returns the columns to read the table with (the event column may be a new one).
    """
    if columns.event in table.columns and looks_like_censoring(columns.event):
        raise InputError(
            f"{source}: the event column '{columns.event}' is named like a censoring indicator "
            "(1 = censored), the opposite of an event (1 = observed); make it the censoring column "
            f"(--censor-col {columns.event}) to have it inverted, or name the real event column"
        )
    censor = columns.censor
    if censor is None and columns.event not in table.columns:
        censor = next(
            (c for c in table.columns if isinstance(c, str) and c.lower() in CENSOR_NAMES), None
        )
    if censor is None:
        return columns
    if censor not in table.columns:
        raise InputError(
            f"{source}: missing censoring column '{censor}' "
            f"(the table has {', '.join(map(str, table.columns))})"
        )
    if columns.time not in table.columns:
        return columns  # reported as a missing column by the caller
    checked = validate_outcome(table, columns.time, censor, source)
    event = 1 - checked[censor]
    if columns.event in table.columns and columns.censor is not None:
        given = validate_outcome(table, columns.time, columns.event, source)[columns.event]
        if (given != event).any():
            i = int(np.flatnonzero((given != event).to_numpy())[0])
            raise InputError(
                f"{source}, {table_line(i)}: '{columns.event}' and the censoring column "
                f"'{censor}' disagree (an event is 1 - censored); drop one of them"
            )
    name = "__event_from_censoring__"
    table[name] = event.to_numpy()
    if columns.patient in table.columns:  # count patients, not rows
        event = table.groupby(table[columns.patient].astype(str))[name].first()
    log.info(
        "%s: '%s' is a censoring indicator (1 = censored); using event = 1 - %s "
        "(%d events, %d censored patients)",
        source,
        censor,
        censor,
        int(event.sum()),
        int((event == 0).sum()),
    )
    return replace(columns, event=name, censor=censor)


def join_slide_table(
    clinical: pd.DataFrame,
    slide_table: str | os.PathLike | pd.DataFrame,
    columns: Columns,
    clinical_source: str = "<table>",
) -> pd.DataFrame:
    """One row per slide: the slide table's (patient, slide) rows joined to the clinical rows.

    STAMP keeps a clinical table (one row per patient) apart from a slide table (``PATIENT``,
    ``FILENAME``); both use ``columns.patient``, the slide table holds ``columns.slide``.
    Patients of the clinical table with no slide are left out with one logged line.
    """
    if isinstance(slide_table, pd.DataFrame):
        slides, source = slide_table.reset_index(drop=True), "<slide table>"
    else:
        slides, source = read_table(slide_table, (columns.patient, columns.slide)), str(slide_table)
    missing = [c for c in (columns.patient, columns.slide) if c not in slides.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(map(repr, missing))} of a slide table "
            f"(it has {', '.join(map(str, slides.columns))}); name the patient and slide columns"
        )
    if columns.patient not in clinical.columns:
        return clinical  # reported as a missing column by the caller
    dup = clinical[columns.patient].astype(str).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(
            f"{clinical_source}, {table_line(i)}: duplicate patient "
            f"'{clinical[columns.patient].iloc[i]}' (with a slide table it has one row per patient)"
        )
    extra = [c for c in clinical.columns if c == columns.slide]
    clinical = clinical.drop(columns=extra)
    left = clinical.assign(**{columns.patient: clinical[columns.patient].astype(str)})
    right = _checked_slide_rows(slides, columns, source)
    joined = left.merge(right, on=columns.patient, how="inner", sort=False)
    n_without = left[columns.patient].nunique() - joined[columns.patient].nunique()
    if joined.empty:
        raise InputError(
            f"{source}: no patient of the slide table is in the clinical table "
            f"(e.g. '{right[columns.patient].iloc[0]}'); is the patient column right?"
        )
    if n_without:
        log.info(
            "%s: %d patient(s) of the clinical table have no slide; left out", source, n_without
        )
    return joined


def _checked_slide_rows(slides: pd.DataFrame, columns: Columns, source: str) -> pd.DataFrame:
    """The slide table's (patient, slide) rows, patient ids as text; an error naming the slide
    table's line for an empty cell or a slide listed twice."""
    right = slides[[columns.patient, columns.slide]]
    for column in (columns.patient, columns.slide):
        if right[column].isna().any():
            i = int(np.flatnonzero(right[column].isna().to_numpy())[0])
            raise InputError(f"{source}, {table_line(i)}: column '{column}' is empty")
    dup = right[columns.slide].astype(str).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(
            f"{source}, {table_line(i)}: slide '{right[columns.slide].iloc[i]}' is listed twice"
        )
    return right.assign(**{columns.patient: right[columns.patient].astype(str)})
