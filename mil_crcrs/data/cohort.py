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

Reading the files, :class:`Columns` and the checks of single columns live in
:mod:`mil_crcrs.data.tables` (``Columns``, ``read_table`` and ``validate_outcome`` are importable
from here too); this module builds the :class:`Cohort` and matches it to feature files.

Every problem raises :class:`~mil_crcrs.errors.InputError` naming the file, line or column.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from mil_crcrs.data.tables import (
    Columns,
    event_from_censoring,
    join_slide_table,
    read_table,
    table_line,
    validate_outcome,
)
from mil_crcrs.errors import InputError

__all__ = [  # Columns, read_table and validate_outcome live in tables.py; importable here too
    "DAYS_PER_UNIT",
    "SLIDE_SUFFIXES",
    "DEFAULT_TIME_UNIT",
    "MISSING_POLICIES",
    "TIME_UNITS",
    "Cohort",
    "DataWarning",
    "cohort_from_slides",
    "read_cohort",
    "read_table",
    "strip_slide_suffix",
    "validate_outcome",
]

TIME_UNITS = ("days", "months", "years")
DEFAULT_TIME_UNIT = "days"
MISSING_POLICIES = ("error", "warn")  # a slide in the table without a feature file
DAYS_PER_UNIT = {"days": 1.0, "months": 365.25 / 12.0, "years": 365.25}
#: Extensions a slide id may carry in a table and still match its feature file's stem.
SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide",
    ".czi", ".isyntax", ".dcm", ".qptiff", ".jpg", ".jpeg", ".png",
    ".h5", ".hdf5", ".pt",
)  # fmt: skip


class DataWarning(UserWarning):
    """Something in the data was dropped or adjusted, as an option asked."""


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
    time_unit: str = DEFAULT_TIME_UNIT
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
        :data:`SLIDE_SUFFIXES`), or by its last path part (STAMP's ``FILENAME``
        ``centre_a/TCGA-01.h5`` matches ``TCGA-01.h5`` in that sub-folder); the returned cohort
        names its slides by the file stems.

        Parameters
        ----------
        available : slide ids that have a feature file (file stems)
        missing : "error" raises listing the first few missing slides; "warn" drops them (and
            patients left with no slide) with a :class:`DataWarning` giving the count.
        """
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be 'error' or 'warn', got {missing!r}")
        have = list(available)
        by_key = {strip_slide_suffix(s): s for s in have}
        exact = set(have)
        found: dict[str, str] = {}
        for sid in (s for sl in self.slides.values() for s in sl):
            match = sid if sid in exact else by_key.get(strip_slide_suffix(sid))
            if match is None:  # STAMP's FILENAME: the file's path in the feature folder
                match = by_key.get(strip_slide_suffix(re.split(r"[/\\]", sid)[-1]))
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


def read_cohort(
    path: str | os.PathLike | pd.DataFrame,
    columns: Columns = Columns(),
    time_unit: str = DEFAULT_TIME_UNIT,
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
    table, source, resolved = _slide_rows(path, columns, slide_table)
    columns = resolved or event_from_censoring(table, columns, source)
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
        raise InputError(f"{source}, {table_line(i)}: column '{columns.patient}' is empty")
    if has_outcome:
        table = validate_outcome(table, columns.time, columns.event, source)
    patient = table[columns.patient].astype(str)
    slide = _slide_ids(table, patient, columns, source)
    if has_outcome:
        _check_one_outcome(table, patient, columns, source)
    return _cohort(table, patient, slide, columns, has_outcome, source, time_unit)


def _slide_rows(
    path: str | os.PathLike | pd.DataFrame,
    columns: Columns,
    slide_table: str | os.PathLike | pd.DataFrame | None,
) -> tuple[pd.DataFrame, str, Columns | None]:
    """The table with one row per slide (a copy, joined to ``slide_table`` if given), where it
    came from, and with a slide table the columns to read it with: the clinical table's
    outcome is checked before the join, so that an error names its own line."""
    if isinstance(path, pd.DataFrame):
        table, source = path.reset_index(drop=True), "<table>"
    else:
        table, source = read_table(path, (columns.patient, columns.slide)), str(path)
    if slide_table is None:
        return table.copy(), source, None
    table = table.copy()
    resolved = event_from_censoring(table, columns, source)
    if resolved.time in table.columns and resolved.event in table.columns:
        table = validate_outcome(table, resolved.time, resolved.event, source)
    if resolved.patient in table.columns and table[resolved.patient].isna().any():
        i = int(np.flatnonzero(table[resolved.patient].isna().to_numpy())[0])
        raise InputError(f"{source}, {table_line(i)}: column '{resolved.patient}' is empty")
    return join_slide_table(table, slide_table, resolved, source), source, resolved


def _slide_ids(table: pd.DataFrame, patient: pd.Series, columns: Columns, source: str) -> pd.Series:
    """Each row's slide id (the patient id where the table has no slide column); an error for
    an empty or a repeated one."""
    if columns.slide in table.columns:
        if table[columns.slide].isna().any():
            i = int(np.flatnonzero(table[columns.slide].isna().to_numpy())[0])
            raise InputError(f"{source}, {table_line(i)}: column '{columns.slide}' is empty")
        slide = table[columns.slide].astype(str)
    else:
        slide = patient
    dup = slide.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        what = f"slide id '{slide.iloc[i]}'"
        if columns.slide not in table.columns:
            what = (
                f"patient '{slide.iloc[i]}' (without a '{columns.slide}' column each patient is "
                "one slide)"
            )
        raise InputError(f"{source}, {table_line(i)}: duplicate {what}")
    return slide


def _check_one_outcome(
    table: pd.DataFrame, patient: pd.Series, columns: Columns, source: str
) -> None:
    """Refuse a patient whose rows (slides) give different times or events."""
    for col in (columns.time, columns.event):
        n_distinct = table.groupby(patient)[col].nunique()
        if (n_distinct > 1).any():
            pid = n_distinct.index[n_distinct.to_numpy() > 1][0]
            values = sorted(table.loc[patient == pid, col].unique().tolist())
            raise InputError(
                f"{source}: patient '{pid}' has conflicting '{col}' values {values} across rows"
            )


def _cohort(
    table: pd.DataFrame,
    patient: pd.Series,
    slide: pd.Series,
    columns: Columns,
    has_outcome: bool,
    source: str,
    time_unit: str,
) -> Cohort:
    """One row per patient (outcome, then covariates: first value per patient) and its slides."""
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
