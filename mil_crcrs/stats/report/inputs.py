"""The patient table of a report: predictions joined with a clinical table, and usable horizons.

:func:`load_patients` joins a predictions CSV (``patient_id, crcrs, risk_group`` [, ``time,
event, fold``], as ``crcrs predict`` writes it) with a clinical table on ``patient_id``:

- The outcome comes from the clinical table; if that has no time and event columns, from the
  predictions.
- Patients in the predictions without a clinical row are dropped with a note; no patient in
  common is an error.

:func:`usable_horizons` keeps the horizons with at least ``min_events`` events by then and at
least ``min_events`` patients followed beyond.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mil_crcrs.data.cohort import DAYS_PER_UNIT, TIME_UNITS, read_cohort
from mil_crcrs.data.tables import read_table, table_line, validate_outcome
from mil_crcrs.errors import InputError
from mil_crcrs.stats.report.settings import ReportSettings


def read_predictions(
    path: str | os.PathLike | pd.DataFrame, id_column: str = "patient_id"
) -> pd.DataFrame:
    """Read and check a predictions table; returns it indexed by ``patient_id`` (str).

    Required columns: the patient id (``id_column``, as ``crcrs predict`` keeps the table's own
    name for it, e.g. ``case_id``; ``patient_id`` is accepted too), ``crcrs`` (finite numbers),
    ``risk_group`` ("high" or "low"); ``time`` and ``event`` are checked when present.
    """
    if isinstance(path, pd.DataFrame):
        table, source = path.reset_index(drop=True), "<predictions>"
    else:
        table, source = read_table(path), str(path)
    if id_column not in table.columns and "patient_id" in table.columns:
        id_column = "patient_id"
    if id_column != "patient_id":
        table = table.drop(columns=["patient_id"], errors="ignore")
        table = table.rename(columns={id_column: "patient_id"})
    missing = [c for c in ("patient_id", "crcrs", "risk_group") if c not in table.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(map(repr, missing))} of a predictions "
            f"table (it has {', '.join(map(str, table.columns))})"
        )
    crcrs = pd.to_numeric(table["crcrs"], errors="coerce")
    bad = ~np.isfinite(crcrs.to_numpy(dtype=float))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{source}, {table_line(i)}: column 'crcrs' must be a finite number, "
            f"got {table['crcrs'].iloc[i]!r}"
        )
    group = table["risk_group"].astype(str).str.strip().str.lower()
    bad = ~group.isin(["high", "low"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{source}, {table_line(i)}: column 'risk_group' must be 'high' or 'low', "
            f"got {table['risk_group'].iloc[i]!r}"
        )
    pid = table["patient_id"].astype(str)
    dup = pid.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"{source}, {table_line(i)}: duplicate patient_id '{pid.iloc[i]}'")
    if "time" in table.columns and "event" in table.columns:
        table = validate_outcome(table, "time", "event", source)
    out = table.assign(patient_id=pid, crcrs=crcrs.astype(float), risk_group=group)
    return out.set_index("patient_id")


def load_patients(
    predictions: str | os.PathLike | pd.DataFrame,
    clinical: str | os.PathLike | pd.DataFrame,
    settings: ReportSettings,
) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    """Join predictions and clinical table into one patient table.

    Returns
    -------
    table : indexed by patient_id, with ``time, event, crcrs, risk_group`` and the covariates
    info : ``source``, ``n_predictions``, ``n_clinical``
    notes : warnings for the report
    """
    pred = read_predictions(predictions, settings.columns.patient)
    clin = read_cohort(clinical, settings.columns, settings.time_unit, require_outcome=False)
    pred_src = "<predictions>" if isinstance(predictions, pd.DataFrame) else str(predictions)
    source = clin.source
    common = [p for p in pred.index if p in clin.patients.index]
    if not common:
        raise InputError(
            f"{pred_src} and {source} have no patient in common (e.g. "
            f"'{pred.index[0]}' vs '{clin.patients.index[0]}'; is the patient id column right?)"
        )
    notes = []
    if len(common) < len(pred):
        notes.append(
            f"{source}: {len(pred) - len(common)} of {len(pred)} patients in "
            f"{pred_src} have no clinical row and were left out"
        )
    patients = clin.patients.loc[common]
    if clin.has_outcome:
        outcome = patients[["time", "event"]]
    elif "time" in pred.columns and "event" in pred.columns:
        outcome = pred.loc[common, ["time", "event"]]
        source = pred_src
    else:
        raise InputError(f"neither {source} nor {pred_src} has time and event columns")
    table = pd.concat(
        [
            outcome.astype({"time": float, "event": int}),
            pred.loc[common, ["crcrs", "risk_group"]],
            patients[[c for c in patients.columns if c in settings.covariates]],
        ],
        axis=1,
    )
    table.index.name = "patient_id"
    if table["event"].sum() == 0:
        raise InputError(f"{source}: no events among the {len(table)} patients with predictions")
    implausible = _implausible_follow_up(table["time"].to_numpy(float), settings.time_unit)
    if implausible:
        notes.append(f"{source}: {implausible}")
    info = {
        "source": source,
        "predictions": pred_src,
        "n_predictions": len(pred),
        "n_clinical": len(clin.patients),
    }
    return table, info, notes


def usable_horizons(
    time: np.ndarray,
    event: np.ndarray,
    horizons: Sequence[float],
    min_events: int,
    unit: str = "",
) -> tuple[list[float], list[str]]:
    """Split horizons into usable ones and reasons for the others (see the module docstring)."""
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    kept, reasons = [], []
    for h in horizons:
        n_events = int(((time <= h) & (event == 1)).sum())
        beyond = int((time > h).sum())
        if n_events < min_events:
            reasons.append(f"only {n_events} event(s) by then (need {min_events})")
        elif beyond < min_events:
            reasons.append(
                f"only {beyond} patient(s) followed beyond it (need {min_events}); "
                f"the longest follow-up is {time.max():g} {unit}".rstrip()
            )
        else:
            kept.append(float(h))
            continue
    return kept, reasons


def _implausible_follow_up(time: np.ndarray, unit: str) -> str:
    """A note when follow-up times look as if read in the wrong unit ('' when they do not):
    colorectal-cancer follow-up runs for months to years, rarely under 1 or over 30 years."""
    longest = float(np.max(time))
    years = longest * DAYS_PER_UNIT[unit] / DAYS_PER_UNIT["years"]
    if 1.0 <= years <= 30.0:
        return ""
    k = TIME_UNITS.index(unit)
    other = TIME_UNITS[k + 1 : k + 2] if years < 1.0 else TIME_UNITS[max(k - 1, 0) : k]
    hint = other[0] if other else "UNIT"
    return (
        f"the longest follow-up is {longest:g} {unit} ({years:.2g} years): if the times are "
        f"in {hint}, say --time-unit {hint}"
    )
