"""One input path: feature files plus a cohort table become a matched store, cohort and bags.

Fit, predict, heatmaps and the simulation checks all start here, so the rules (which table
columns, what a missing slide does, which patients need an outcome) and their messages exist
once.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from mil_crcrs.data.bags import PatientBags
from mil_crcrs.data.cohort import (
    DEFAULT_TIME_UNIT,
    Cohort,
    DataWarning,
    cohort_from_slides,
    read_cohort,
)
from mil_crcrs.data.store import FeatureStore, ReadSettings
from mil_crcrs.data.tables import Columns
from mil_crcrs.errors import InputError, SettingError

FeaturesArg = str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore
TableArg = str | os.PathLike | pd.DataFrame | Cohort


@dataclass(frozen=True)
class Inputs:
    """Feature files and a cohort, matched: every patient in ``cohort`` has its slides in
    ``store``, and ``bags`` reads them patient by patient (in the cohort's order)."""

    store: FeatureStore
    cohort: Cohort
    bags: PatientBags


def open_store(features: FeaturesArg, settings: ReadSettings | None = None) -> FeatureStore:
    """The feature files under ``features`` (read with ``settings``); an error when there are
    none."""
    if isinstance(features, FeatureStore):
        store = features
    else:
        store = FeatureStore(features, settings=settings)
    if len(store) == 0:
        raise InputError(f"{store}: no feature files (.h5 or .pt) found")
    return store


def as_cohort(
    clinical: TableArg | None,
    store: FeatureStore,
    columns: Columns = Columns(),
    time_unit: str = DEFAULT_TIME_UNIT,
    outcome: bool = False,
) -> Cohort:
    """A cohort from a table, a frame or a :class:`Cohort`; without one, each slide in
    ``store`` is its own patient (no outcome)."""
    if isinstance(clinical, Cohort):
        cohort = clinical
    elif clinical is not None:
        cohort = read_cohort(clinical, columns, time_unit, require_outcome=outcome)
    else:
        cohort = cohort_from_slides(store.slide_ids)
    return cohort.require_outcome() if outcome else cohort


def open_inputs(
    features: FeaturesArg,
    clinical: TableArg | None = None,
    columns: Columns = Columns(),
    time_unit: str = DEFAULT_TIME_UNIT,
    *,
    outcome: bool = False,
    missing: str = "error",
    patients: Iterable[str] | None = None,
) -> Inputs:
    """Match feature files with a cohort table.

    Parameters
    ----------
    features : a folder or files of feature bags, or an open store
    clinical : the cohort table (path, frame or :class:`Cohort`); None scores each slide alone
    columns, time_unit : how to read the table
    outcome : every patient must have a time and an event (training, validation)
    missing : what a slide without a feature file does: "error" stops, "warn" drops it (and a
        patient left with no slide) with a :class:`~mil_crcrs.data.cohort.DataWarning`
    patients : keep only these patients, in this order

    Raises
    ------
    InputError
        No feature files, a bad table, or missing slides.
    SettingError
        ``patients`` names a patient the cohort does not have (setting ``patients``).
    """
    store = open_store(features)
    cohort = as_cohort(clinical, store, columns, time_unit, outcome)
    if patients is not None:  # other patients' files do not matter
        cohort = _only(cohort, [str(p) for p in patients])
    cohort = skip_empty(cohort.match_features(store.slide_ids, missing), store, clinical is None)
    if outcome:  # dropping patients without files can leave too few events
        cohort = cohort.require_outcome()
    return Inputs(store=store, cohort=cohort, bags=PatientBags(cohort, store))


def warn_empty(where: str, empty: Sequence[str], more: str = "") -> None:
    """The one warning line for feature files skipped because they have zero tiles."""
    shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
    warnings.warn(
        f"{where}: skipped {len(empty)} feature file(s) with zero tiles (a slide without "
        f"tissue): {shown}{more}",
        DataWarning,
        stacklevel=4,
    )


def skip_empty(cohort: Cohort, store: FeatureStore, file_patients: bool = False) -> Cohort:
    """``cohort`` without its slides whose feature file has zero tiles (TRIDENT writes one for
    a slide without tissue), and without patients left with no slide, said in one warning
    (``file_patients``: each file is a patient, so no patient count is added)."""
    slides = [s for sl in cohort.slides.values() for s in sl]
    empty = [s for s in slides if store.is_empty(s)]
    if not empty:
        return cohort
    kept = {p: tuple(s for s in sl if s not in empty) for p, sl in cohort.slides.items()}
    keep = [p for p, sl in kept.items() if sl]
    dropped = len(kept) - len(keep)
    more = f"; {dropped} patient(s) left with no slide" if dropped and not file_patients else ""
    warn_empty(str(store), empty, more)
    if not keep:
        raise InputError(f"{store}: every feature file has zero tiles")
    return replace(cohort, patients=cohort.patients.loc[keep], slides={p: kept[p] for p in keep})


def _only(cohort: Cohort, wanted: list[str]) -> Cohort:
    """The cohort restricted to the ``patients`` setting; an error names any unknown one."""
    unknown = [p for p in wanted if p not in cohort.slides]
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise SettingError(
            "patients", f"names {len(unknown)} patient(s) not in {cohort.source}: {shown}"
        )
    return cohort.subset(dict.fromkeys(wanted))


def check_same_features(
    source: str,
    feature_dim: int,
    encoder: str | None,
    fitted: tuple[int, str | None],
    what: str = "the model was trained on",
) -> None:
    """Raise :class:`InputError` unless features of ``feature_dim`` from ``encoder`` are what
    ``what`` (the model, the phenotypes) was fitted on: ``fitted`` is its (dim, encoder). An
    encoder that one side does not name is not compared."""
    fitted_dim, fitted_encoder = fitted
    if feature_dim != fitted_dim:
        raise InputError(
            f"{source}: features have dim {feature_dim} but {what} dim {fitted_dim} "
            f"(encoder {fitted_encoder!r}); extract with the same encoder"
        )
    if encoder and fitted_encoder and encoder != fitted_encoder:
        raise InputError(
            f"{source}: features come from encoder {encoder!r} but {what} {fitted_encoder!r}; "
            "extract with the same encoder"
        )
