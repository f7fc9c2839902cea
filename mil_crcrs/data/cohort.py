"""The cohort table: one row per slide, one bag per patient.

The table has a row per slide with ``patient_id``, ``slide_id``, ``time`` and ``event``
(1 = death or event observed, 0 = censored) plus any covariates; the column names can be chosen
with :class:`Columns`. All of a patient's slides form one bag. A table without a slide column
means one slide per patient, named by the patient id.

Tables as the peers write them are read as they are:

- CLAM/PORPOISE's ``censorship`` (1 = censored) is recognised, by that name or named with
  ``Columns.censor``, and inverted into ``event`` with one logged line; an event column whose
  name says "censor" is refused, since reading it as events would invert every outcome;
- slide ids match feature files with or without a slide-file extension (``TCGA-01.svs``);
- STAMP's separate slide table (``PATIENT``, ``FILENAME``) is joined with ``slide_table``;
- CSV (UTF-8 with or without BOM, or Latin-1; ``,``, ``;`` or tab) and Excel ``.xlsx``.

Every problem raises :class:`~mil_crcrs.errors.InputError` naming the file, line or column.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError, first_line

TIME_UNITS = ("days", "months", "years")
#: Column names that say 1 = censored (CLAM, PORPOISE): the opposite of an event column.
CENSORING_NAME = re.compile(r"censor|^cens$|^is_cens", re.IGNORECASE)
DAYS_PER_UNIT = {"days": 1.0, "months": 365.25 / 12.0, "years": 365.25}
#: Extensions a slide id may carry in a table and still match its feature file's stem.
SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide",
    ".czi", ".isyntax", ".dcm", ".qptiff", ".jpg", ".jpeg", ".png",
    ".h5", ".hdf5", ".pt",
)  # fmt: skip
#: Column names a peer uses for a censoring indicator (1 = censored), matched without case.
CENSOR_NAMES = ("censorship", "censored", "censor", "is_censored", "censoring", "cens")

log = logging.getLogger(__name__)


class DataWarning(UserWarning):
    """Something in the data was dropped or adjusted, as an option asked."""


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
    covariates : the table's other columns
    id_column : the table's name for the patient id, kept in output tables (``case_id`` stays
        ``case_id``)
    """

    patients: pd.DataFrame
    slides: Mapping[str, tuple[str, ...]]
    source: str = "<table>"
    time_unit: str = "days"
    covariates: tuple[str, ...] = field(default=())
    id_column: str = "patient_id"

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
        """Keep the slides that have feature files, named as the files are.

        A slide id matches a feature file's stem as it is or without a slide-file extension on
        either side (``TCGA-01.svs`` in a table matches ``TCGA-01.h5``; see
        :data:`SLIDE_SUFFIXES`); the returned cohort names its slides by the file stems.

        Parameters
        ----------
        available : slide ids that have a feature file (file stems)
        missing : "error" raises listing the first few missing slides; "warn" drops them (and
            patients left with no slide) with a :class:`DataWarning` giving the count.
        """
        if missing not in ("error", "warn"):
            raise ValueError(f"missing must be 'error' or 'warn', got {missing!r}")
        have = list(available)
        by_key = {strip_slide_suffix(s): s for s in have}
        exact = set(have)
        found: dict[str, str] = {}
        for sid in (s for sl in self.slides.values() for s in sl):
            match = sid if sid in exact else by_key.get(strip_slide_suffix(sid))
            if match is None:
                continue
            if match in found.values():
                other = next(k for k, v in found.items() if v == match)
                raise InputError(
                    f"{self.source}: slides '{other}' and '{sid}' both match the feature file "
                    f"'{match}'"
                )
            found[sid] = match
        absent = [s for sl in self.slides.values() for s in sl if s not in found]
        slides = {p: tuple(found[s] for s in sl if s in found) for p, sl in self.slides.items()}
        if not absent:
            return self if all(k == v for k, v in found.items()) else replace(self, slides=slides)
        if missing == "error":
            shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
            hint = f" (feature files are named like '{have[0]}')" if have and not found else ""
            raise InputError(
                f"{self.source}: {len(absent)} slide(s) in the table have no feature file: "
                f"{shown}{hint}"
            )
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


def strip_slide_suffix(name: str) -> str:
    """``name`` without trailing slide- or feature-file extensions (``a.svs.h5`` -> ``a``)."""
    stem = str(name)
    while True:
        dot = stem.rfind(".")
        if dot <= 0 or stem[dot:].lower() not in SLIDE_SUFFIXES:
            return stem
        stem = stem[:dot]


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
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=as_text)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({first_line(exc)})") from None


def looks_like_censoring(name: object) -> bool:
    """True if a column name says it holds a censoring indicator (``censorship``, ...)."""
    return isinstance(name, str) and bool(CENSORING_NAME.search(name))


def _event_from_censoring(table: pd.DataFrame, columns: Columns, source: str) -> Columns:
    """Resolve which column gives the event; a censoring column becomes ``event`` (inverted).

    Returns the columns to read the table with (the event column may be a new one).
    """
    if columns.event in table.columns and looks_like_censoring(columns.event):
        raise InputError(
            f"{source}: the event column '{columns.event}' is named like a censoring indicator "
            "(1 = censored), the opposite of an event (1 = observed); pass it as --censor-col "
            f"{columns.event} to have it inverted, or name the real event column"
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
                f"{source}, {_line(i)}: '{columns.event}' and the censoring column '{censor}' "
                "disagree (an event is 1 - censored); drop one of them"
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
            f"(it has {', '.join(map(str, slides.columns))}); set --patient-col and --slide-col"
        )
    if columns.patient not in clinical.columns:
        return clinical  # reported as a missing column by the caller
    dup = clinical[columns.patient].astype(str).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(
            f"{clinical_source}, {_line(i)}: duplicate patient "
            f"'{clinical[columns.patient].iloc[i]}' (with --slide-table it has one row per patient)"
        )
    extra = [c for c in clinical.columns if c == columns.slide]
    clinical = clinical.drop(columns=extra)
    left = clinical.assign(**{columns.patient: clinical[columns.patient].astype(str)})
    right = slides[[columns.patient, columns.slide]].dropna(subset=[columns.slide])
    right = right.assign(**{columns.patient: right[columns.patient].astype(str)})
    joined = left.merge(right, on=columns.patient, how="inner", sort=False)
    n_without = left[columns.patient].nunique() - joined[columns.patient].nunique()
    if joined.empty:
        raise InputError(
            f"{source}: no patient of the slide table is in the clinical table "
            f"(e.g. '{right[columns.patient].iloc[0]}'); is --patient-col right?"
        )
    if n_without:
        log.info(
            "%s: %d patient(s) of the clinical table have no slide; left out", source, n_without
        )
    return joined


def read_cohort(
    path: str | os.PathLike | pd.DataFrame,
    columns: Columns = Columns(),
    time_unit: str = "days",
    require_outcome: bool = True,
    slide_table: str | os.PathLike | pd.DataFrame | None = None,
) -> Cohort:
    """Read and check a cohort table.

    Parameters
    ----------
    path : a CSV or Excel file, or a data frame already in memory
    columns : the names of the patient, slide, time and event (or censoring) columns
    time_unit : "days", "months" or "years"
    require_outcome : if False, time and event columns may be absent (prediction)
    slide_table : a separate table of (patient, slide) rows, joined to a clinical table of
        one row per patient (STAMP's layout)

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
    if slide_table is not None:
        table = join_slide_table(table, slide_table, columns, source)
    else:
        table = table.copy()
    columns = _event_from_censoring(table, columns, source)

    needed = [columns.patient] + ([columns.time, columns.event] if require_outcome else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(the table has {', '.join(map(str, table.columns))})"
        )
    has_outcome = columns.time in table.columns and columns.event in table.columns
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

    reserved = {columns.patient, columns.slide, columns.time, columns.event, columns.censor}
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
        id_column=columns.patient,
    )
