"""The cohorts of a survival report and the models fitted on the training one.

- :func:`fit_training_models`: the covariate encoding and the three Cox models (CRCRS, the
  clinical covariates, both) are fitted once, on the training cohort's complete cases (patients
  with every covariate known), and applied unchanged to every cohort.
- :func:`prepare_cohort`: a cohort's complete cases and usable horizons. A horizon needs, among
  the complete cases, at least ``min_events`` events by then and at least ``min_events``
  patients followed beyond it; validation horizons must also be usable in training (the
  nomogram's baseline hazard is estimated there). Dropped horizons and left-out patients become
  notes; no usable horizon at all is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from mil_crcrs.errors import InputError
from mil_crcrs.stats.covariates import Encoding, make_encoding
from mil_crcrs.stats.cox import CoxModel, fit_cox
from mil_crcrs.stats.report.inputs import usable_horizons
from mil_crcrs.stats.report.settings import ReportSettings
from mil_crcrs.stats.survival import median_follow_up

MODEL_CRCRS, MODEL_CLINICAL, MODEL_BOTH = "CRCRS", "clinical", "CRCRS + clinical"


@dataclass(frozen=True)
class TrainingModels:
    """The Cox models fitted once on the training cohort's complete cases.

    Attributes
    ----------
    encoding : how ``crcrs``, ``risk_group`` and the covariates enter every model
    crcrs, clinical, both : CRCRS alone, the covariates alone, CRCRS + covariates (the nomogram)
    horizons : the horizons (time unit) usable in the training cohort
    """

    encoding: Encoding
    crcrs: CoxModel
    clinical: CoxModel
    both: CoxModel
    horizons: list[float]

    @property
    def all(self) -> tuple[CoxModel, CoxModel, CoxModel]:
        return (self.crcrs, self.clinical, self.both)


@dataclass(frozen=True)
class Cohort:
    """One cohort ready for the sections.

    Attributes
    ----------
    role : "training" or "validation"
    source : where its outcome came from, for messages
    table : every patient (``time, event, crcrs, risk_group`` and the covariates)
    complete : the patients with every covariate known
    horizons : its usable horizons, in the time unit
    """

    role: str
    source: str
    table: pd.DataFrame
    complete: pd.DataFrame
    horizons: list[float]

    @property
    def title(self) -> str:
        return f"{self.role.capitalize()} cohort"


def label_years(h_years: float) -> str:
    """``3`` -> ``"3-year"``."""
    return f"{h_years:g}-year"


def fit_training_models(
    table: pd.DataFrame, source: str, settings: ReportSettings
) -> TrainingModels:
    """Encode the variables and fit the three Cox models on the training cohort.

    Parameters
    ----------
    table : the training cohort's patient table (from
        :func:`~mil_crcrs.stats.report.inputs.load_patients`)
    source : its origin, for messages
    settings : the report's settings
    """
    covariates = list(settings.covariates)
    encoding = make_encoding(
        table, ["crcrs", "risk_group", *covariates], settings.categorical, source
    )
    complete = table.dropna(subset=covariates)
    m_crcrs = fit_cox(complete, encoding.subset(["crcrs"]), MODEL_CRCRS, source)
    m_clinical = fit_cox(complete, encoding.subset(covariates), MODEL_CLINICAL, source)
    m_both = fit_cox(complete, encoding.subset(["crcrs", *covariates]), MODEL_BOTH, source)
    horizons, _ = usable_horizons(
        complete["time"], complete["event"], _wanted(settings), settings.min_events
    )
    return TrainingModels(encoding, m_crcrs, m_clinical, m_both, horizons)


def _wanted(settings: ReportSettings) -> list[float]:
    return [h * settings.unit_per_year for h in settings.horizons_years]


def prepare_cohort(
    role: str,
    table: pd.DataFrame,
    source: str,
    settings: ReportSettings,
    training_horizons: list[float],
) -> tuple[Cohort, list[str]]:
    """A cohort's complete cases and usable horizons, with notes on what was left out.

    Raises
    ------
    InputError
        when no horizon is usable.
    """
    upy, covariates = settings.unit_per_year, list(settings.covariates)
    notes = []
    cc = table.dropna(subset=covariates)
    if len(cc) < len(table):
        notes.append(
            f"{source}: {len(table) - len(cc)} of {len(table)} patients lack a value of "
            f"{', '.join(covariates)} and are left out of the Cox models with "
            "covariates, the nomogram, discrimination, calibration and decision curves"
        )
    wanted = _wanted(settings)
    kept, reasons = usable_horizons(
        cc["time"], cc["event"], wanted, settings.min_events, settings.time_unit
    )
    for h, why in zip([h for h in wanted if h not in kept], reasons, strict=True):
        notes.append(f"{source}: the {label_years(h / upy)} horizon was dropped: {why}")
    if role != "training":
        for h in [h for h in kept if h not in training_horizons]:
            notes.append(
                f"{source}: the {label_years(h / upy)} horizon was dropped: it is not "
                "usable in the training cohort, where the nomogram is fitted"
            )
        kept = [h for h in kept if h in training_horizons]
    if not kept:
        raise InputError(
            f"{source}: no usable horizon among {', '.join(map(str, settings.horizons_years))} "
            f"years (each needs {settings.min_events} events by it and {settings.min_events} "
            f"patients followed beyond it; the longest follow-up is "
            f"{cc['time'].max() / upy:.2f} years)"
        )
    return Cohort(role, source, table, cc, kept), notes


def cohort_row(cohort: Cohort, info: dict[str, Any], settings: ReportSettings) -> dict[str, Any]:
    """The cohort's line of the ``cohorts`` table: sources, sizes, follow-up, horizons."""
    upy, table, cc = settings.unit_per_year, cohort.table, cohort.complete
    return {
        "cohort": cohort.role,
        "source": cohort.source,
        "predictions": info["predictions"],
        "n_predictions": info["n_predictions"],
        "n_clinical": info["n_clinical"],
        "n": len(table),
        "events": int(table["event"].sum()),
        "n_complete": len(cc),
        "events_complete": int(cc["event"].sum()),
        "median_follow_up_reverse_km_years": median_follow_up(table["time"], table["event"]) / upy,
        "horizons_years": ", ".join(f"{h / upy:g}" for h in cohort.horizons),
    }
