"""The cohort table: one row per slide, one bag per patient.

The table has a row per slide with ``patient_id``, ``slide_id``, ``time`` and ``event``
(1 = death or event observed, 0 = censored) plus any covariates; the column names can be chosen
with :class:`Columns`. All of a patient's slides form one bag. A table without a slide column
means one slide per patient, named by the patient id.

Every problem raises :class:`~mil_crcrs.errors.InputError` naming the file, line or column.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError

TIME_UNITS = ("days", "months", "years")
#: Column names that say 1 = censored (CLAM, PORPOISE): the opposite of an event column.
CENSORING_NAME = re.compile(r"censor|^cens$|^is_cens", re.IGNORECASE)
DAYS_PER_UNIT = {"days": 1.0, "months": 365.25 / 12.0, "years": 365.25}


class DataWarning(UserWarning):
    """Something in the data was dropped or adjusted, as an option asked."""


@dataclass(frozen=True)
class Columns:
    """Names of the cohort table's columns (peers differ: map theirs here)."""

    patient: str = "patient_id"
    slide: str = "slide_id"
    time: str = "time"
    event: str = "event"


@dataclass(frozen=True)
class Cohort:
    """Patients with their slides and, where known, their outcome.

    Attributes
    ----------
    patients : DataFrame indexed by ``patient_id`` (str) with ``time`` and ``event`` columns
        where the outcome is known, then any covariates; one row per patient.
    slides : mapping from patient id to the tuple of its slide ids
    source : where the table came from (a path, or a description), for messages
    time_unit : the unit of ``time``
    """

    patients: pd.DataFrame
    slides: Mapping[str, tuple[str, ...]]
    source: str = "<table>"
    time_unit: str = "days"
    covariates: tuple[str, ...] = field(default=())

    @property
    def patient_ids(self) -> list[str]:
        return list(self.patients.index)

    @property
    def has_outcome(self) -> bool:
        return "time" in self.patients and "event" in self.patients

    @property
    def time(self) -> np.ndarray:
        """(n_patients,) float64 follow-up times in :attr:`time_unit`."""
        return self.patients["time"].to_numpy(dtype=np.float64)

    @property
    def event(self) -> np.ndarray:
        """(n_patients,) int64, 1 = event observed, 0 = censored."""
        return self.patients["event"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.patients)

    def subset(self, patient_ids: Iterable[str]) -> Cohort:
        """The cohort restricted to ``patient_ids``, in that order."""
        ids = list(patient_ids)
        return replace(
            self, patients=self.patients.loc[ids], slides={p: self.slides[p] for p in ids}
        )

    def require_outcome(self) -> Cohort:
        """Raise unless every patient has a time and an event, and at least one event occurred."""
        if not self.has_outcome:
            raise InputError(f"{self.source}: the table has no time and event columns")
        if self.event.sum() == 0:
            raise InputError(
                f"{self.source}: no events (every patient is censored); a survival model needs "
                "at least one observed event"
            )
        return self

    def match_features(self, available: Iterable[str], missing: str = "error") -> Cohort:
        """Keep the slides that have feature files.

        Parameters
        ----------
        available : slide ids that have a feature file
        missing : "error" raises listing the first few missing slides; "warn" drops them (and
            patients left with no slide) with a :class:`DataWarning` giving the count.
        """
        if missing not in ("error", "warn"):
            raise ValueError(f"missing must be 'error' or 'warn', got {missing!r}")
        have = set(available)
        absent = [s for sl in self.slides.values() for s in sl if s not in have]
        if not absent:
            return self
        if missing == "error":
            shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
            raise InputError(
                f"{self.source}: {len(absent)} slide(s) in the table have no feature file: {shown}"
            )
        slides = {p: tuple(s for s in sl if s in have) for p, sl in self.slides.items()}
        keep = [p for p, sl in slides.items() if sl]
        warnings.warn(
            f"{self.source}: {len(absent)} slide(s) have no feature file and were dropped; "
            f"{len(self.slides) - len(keep)} patient(s) left with no slide were dropped",
            DataWarning,
            stacklevel=2,
        )
        if not keep:
            raise InputError(f"{self.source}: no slide in the table has a feature file")
        return replace(self, patients=self.patients.loc[keep], slides={p: slides[p] for p in keep})


def cohort_from_slides(slide_ids: Iterable[str], source: str = "<feature files>") -> Cohort:
    """A cohort with no outcome where each slide is its own patient."""
    ids = [str(s) for s in slide_ids]
    patients = pd.DataFrame(index=pd.Index(ids, name="patient_id"))
    return Cohort(patients=patients, slides={s: (s,) for s in ids}, source=source)


def _line(index: int) -> str:
    # Line numbers as a spreadsheet or an editor shows them: the header is line 1.
    return f"line {index + 2}"


def _numeric_column(table: pd.DataFrame, column: str, source: str) -> pd.Series:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{source}, {_line(i)}: column '{column}' has the non-numeric value "
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
        raise InputError(f"{source}, {_line(i)}: column '{time_col}' is empty")
    if (time < 0).any():
        i = int(np.flatnonzero((time < 0).to_numpy())[0])
        raise InputError(f"{source}, {_line(i)}: column '{time_col}' is negative ({time.iloc[i]})")
    if not np.isfinite(time.to_numpy(dtype=float)).all():
        i = int(np.flatnonzero(~np.isfinite(time.to_numpy(dtype=float)))[0])
        raise InputError(f"{source}, {_line(i)}: column '{time_col}' is not finite")
    event = _numeric_column(table, event_col, source)
    bad = ~event.isin([0, 1])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{source}, {_line(i)}: column '{event_col}' must be 0 (censored) or 1 (event), "
            f"got {table[event_col].iloc[i]!r}"
        )
    out = table.copy()
    out[time_col] = time.astype(np.float64)
    out[event_col] = event.astype(np.int64)
    return out


def read_table(path: str | os.PathLike, id_columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read a CSV (or TSV) file as strings-or-numbers, with a clear error for unreadable files.

    Parameters
    ----------
    path : the table; ``.tsv``/``.tab`` files are tab-separated, others comma-separated (or
        semicolon-separated, as spreadsheets in many locales export, when the header has
        semicolons and no commas)
    id_columns : columns read as text, so that ids such as ``007`` and ``7`` stay distinct

    Raises
    ------
    InputError
        a missing or unreadable file, one with no rows, or a header naming a column twice.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a table")
    sep = "\t" if path.suffix in (".tsv", ".tab") else ","
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if b"\0" in data:  # pandas would cut the cell short there: refuse rather than misread
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise InputError(
            f"{path}, line {line}: a NUL byte; not a text table (UTF-16? save it as UTF-8 CSV)"
        )
    try:
        header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str).iloc[0]
        if sep == "," and len(header) == 1 and ";" in str(header.iloc[0]):
            sep = ";"
            header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str).iloc[0]
        names = [str(name) for name in header]
        table = pd.read_csv(path, sep=sep, dtype={c: str for c in id_columns if c in names})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    twice = sorted({name for name in names if names.count(name) > 1 and name != "nan"})
    if twice:
        raise InputError(f"{path}: the header names column {twice[0]!r} more than once")
    if table.empty:
        raise InputError(f"{path}: the table has no rows")
    return table


def read_cohort(
    path: str | os.PathLike | pd.DataFrame,
    columns: Columns = Columns(),
    time_unit: str = "days",
    require_outcome: bool = True,
) -> Cohort:
    """Read and check a cohort table.

    Parameters
    ----------
    path : a CSV file, or a data frame already in memory
    columns : the names of the patient, slide, time and event columns
    time_unit : "days", "months" or "years"
    require_outcome : if False, time and event columns may be absent (prediction)

    Returns
    -------
    Cohort with one row per patient. Any other column is kept as a covariate (first value per
    patient).
    """
    if time_unit not in TIME_UNITS:
        raise InputError(f"time unit must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    if isinstance(path, pd.DataFrame):
        table, source = path.reset_index(drop=True), "<table>"
    else:
        table, source = read_table(path, (columns.patient, columns.slide)), str(path)

    needed = [columns.patient] + ([columns.time, columns.event] if require_outcome else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(the table has {', '.join(map(str, table.columns))})"
        )
    has_outcome = columns.time in table.columns and columns.event in table.columns
    if columns.event in table.columns and CENSORING_NAME.search(columns.event):
        raise InputError(
            f"{source}: column '{columns.event}' is named as a censoring indicator (1 = censored), "
            "the opposite of an event column (1 = event observed); using it as events would "
            "train on the inverted outcome"
        )
    if table[columns.patient].isna().any():
        i = int(np.flatnonzero(table[columns.patient].isna().to_numpy())[0])
        raise InputError(f"{source}, {_line(i)}: column '{columns.patient}' is empty")
    if has_outcome:
        table = validate_outcome(table, columns.time, columns.event, source)

    patient = table[columns.patient].astype(str)
    if columns.slide in table.columns:
        if table[columns.slide].isna().any():
            i = int(np.flatnonzero(table[columns.slide].isna().to_numpy())[0])
            raise InputError(f"{source}, {_line(i)}: column '{columns.slide}' is empty")
        slide = table[columns.slide].astype(str)
    else:
        slide = patient
    dup = slide.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        what = (
            f"slide id '{slide.iloc[i]}'"
            if columns.slide in table.columns
            else (
                f"patient '{slide.iloc[i]}' (without a '{columns.slide}' column each patient is one slide)"
            )
        )
        raise InputError(f"{source}, {_line(i)}: duplicate {what}")

    if has_outcome:
        for col in (columns.time, columns.event):
            n_distinct = table.groupby(patient)[col].nunique()
            if (n_distinct > 1).any():
                pid = n_distinct.index[n_distinct.to_numpy() > 1][0]
                values = sorted(table.loc[patient == pid, col].unique().tolist())
                raise InputError(
                    f"{source}: patient '{pid}' has conflicting '{col}' values {values} across rows"
                )

    reserved = {columns.patient, columns.slide, columns.time, columns.event}
    covariates = [c for c in table.columns if c not in reserved]
    per_patient = pd.DataFrame({"patient_id": patient})
    if has_outcome:
        per_patient["time"] = table[columns.time]
        per_patient["event"] = table[columns.event]
    for c in covariates:
        per_patient[c] = table[c]
    patients = per_patient.groupby("patient_id", sort=False).first()
    slides: dict[str, tuple[str, ...]] = {}
    for pid, sid in zip(patient, slide, strict=True):
        slides[pid] = slides.get(pid, ()) + (sid,)
    return Cohort(
        patients=patients,
        slides=slides,
        source=source,
        time_unit=time_unit,
        covariates=tuple(map(str, covariates)),
    )
