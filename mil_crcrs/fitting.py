"""``fit``: cross-validated training of the CRCRS model.

What :func:`fit` does, in order (:mod:`mil_crcrs.train.crossval` runs steps 2-4):

1. reads the cohort and its feature files; every patient's slides form one bag;
2. for each seed in ``seeds`` (one, ``seed``, by default): splits the patients into K folds
   stratified by event (:func:`~mil_crcrs.train.splits.kfold_splits`); each fold's training part also
   gives up an inner validation split for early stopping;
3. trains one model per fold on the other K - 1 folds (:func:`~mil_crcrs.train.loop.train_model`),
   optionally on features standardised with that training part's statistics
   (:mod:`mil_crcrs.train.standardize`), early-stopping on the inner validation split (its C or its
   loss, optionally smoothed over epochs and with the last epochs' weights averaged), never on
   the fold it reports;
4. standardises each model's risk on its own training part and scores each fold with the model
   that never saw it: the **out-of-fold** CRCRS (mean over seeds), and the Harrell C of every
   fold (mean and sd over seeds and folds);
5. fixes the high/low cutoff on the **out-of-fold** CRCRS of the training cohort;
6. calibrates the ensemble onto the out-of-fold scale (below);
7. optionally scores an external validation cohort with the finished ensemble.

The delivered model is the **ensemble of every fold model of every seed**.

**One scale for out-of-fold and ensemble scores.** Each model's risk is standardised on the
patients it was trained on, ``z_m = (risk_m - mean_m) / sd_m``: a Cox likelihood fixes neither
the centre nor, on a small cohort, the spread of a fold model's risk, so raw risks of different
fold models would pool onto one ranking unevenly. A patient's out-of-fold CRCRS is ``z`` of the
model that held them out. The ensemble's raw score is the mean of every model's ``z``; where the
models disagree (little signal) that mean shrinks towards its centre, by up to ``1/sqrt(M)``, and a
cutoff fixed on out-of-fold scores would then put nearly every new patient in one group. So the
ensemble's score is mapped linearly, ``crcrs = a * mean_m z_m + b``, with ``a`` and ``b`` chosen so
that its scores of the training cohort have the mean and sd of the out-of-fold scores. A new
patient from the training population then falls above the cutoff about as often as a training
patient did (tested on cohorts with no, weak and strong signal); ranks and additive tile
contributions are unchanged by the map. ``metrics.json`` records the spreads under ``scale``.

Why the cutoff comes from the out-of-fold scores rather than the ensemble's scores of the training
patients: each training patient was seen by K - 1 of the K models, so the ensemble's scores of
them are *apparent*, fitted to their own outcomes. A cutoff searched on them (maxstat above all)
would be placed where the training outcomes happen to separate, and the high/low split of the
training cohort would look better than it is. An out-of-fold score is what a model says about a
patient it has not seen, which is the situation the cutoff is later applied in. (The calibration
above uses only the mean and sd of the apparent scores, not their relation to outcomes; where
models overfit, apparent scores spread more than new ones, and new patients then land somewhat
less often far from the centre: a median cutoff is not affected, a maxstat one slightly.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from mil_crcrs.data.bags import PatientBags
from mil_crcrs.data.cache import BagCache, open_training_bags
from mil_crcrs.data.cohort import TIME_UNITS, Cohort
from mil_crcrs.data.inputs import as_cohort, open_inputs
from mil_crcrs.data.store import FeatureStore
from mil_crcrs.data.tables import Columns
from mil_crcrs.device import resolve_device
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.errors import SettingError
from mil_crcrs.runlog import progress_log
from mil_crcrs.stats.metrics import harrell_c
from mil_crcrs.train.checkpoints import fold_checkpoints
from mil_crcrs.train.crossval import CrossValidation, cross_validate
from mil_crcrs.train.cutoff import Cutoff, choose_cutoff, risk_group
from mil_crcrs.train.settings import FitSettings, training_autocast

#: Smallest share of patients in either group for the maxstat cutoff.
MAXSTAT_MIN_FRACTION = 0.1


def fit(
    features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore,
    clinical: str | os.PathLike | pd.DataFrame | Cohort,
    settings: FitSettings = FitSettings(),
    columns: Columns = Columns(),
    time_unit: str = "days",
    missing: str = "error",
    val_clinical: str | os.PathLike | pd.DataFrame | Cohort | None = None,
    val_features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore | None = None,
    checkpoints: str | os.PathLike | None = None,
    resume: bool = False,
) -> CRCRSModel:
    """Train the CRCRS model by K-fold cross-validation.

    Parameters
    ----------
    features : folder(s) or files of feature files, or a :class:`FeatureStore`
    clinical : the training cohort table (CSV path, data frame or :class:`Cohort`) with patient,
        slide, time and event columns
    settings : how to train
    columns : the table's column names
    time_unit : unit of the time column ("days", "months", "years")
    missing : "error" or "warn" (drop) for slides without a feature file
    val_clinical : an external validation cohort, scored once by the finished ensemble and
        reported separately (never used to train, stop or choose anything)
    val_features : its feature files (default: ``features``)
    checkpoints : a folder where each finished fold model is saved (:mod:`mil_crcrs.train.checkpoints`);
        None saves none. Delete it once the model is saved.
    resume : take the fold models already in ``checkpoints`` (from an interrupted fit with the
        same settings, cohort and feature files) and train only the rest; the result is the
        same, bitwise on the CPU. Without it, an earlier fit's checkpoints there are cleared.

    Returns
    -------
    CRCRSModel
        The ensemble of the K fold models. ``oof_predictions`` has the out-of-fold CRCRS of
        every training patient (each from the fold model that never saw them); ``metrics`` the
        Harrell C per fold, its mean and sd, and the validation cohort's C if one was given.

    Raises
    ------
    InputError
        Bad tables or files, no events, fewer patients than folds, a fold without events,
        an unknown model.
    """
    if time_unit not in TIME_UNITS:
        raise SettingError(
            "time_unit", f"must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}"
        )
    if val_features is not None and val_clinical is None:
        raise SettingError("val_features", "needs val_clinical (the validation cohort's table)")
    device = resolve_device(settings.device)
    inputs = open_inputs(features, clinical, columns, time_unit, outcome=True, missing=missing)
    store, cohort = inputs.store, inputs.cohort
    bags = open_training_bags(
        inputs.bags, device, settings.cache_gb, settings.resident, settings.progress
    )
    saved = fold_checkpoints(checkpoints, resume, settings, device, cohort, store)
    if training_autocast(settings.precision, device) is not None:
        progress_log.info(
            f"training steps under bf16 autocast on {device} (precision {settings.precision}; "
            "fp32 turns it off); prediction in fp32"
        )
    cv = cross_validate(settings, bags, cohort.time, cohort.event, cohort.source, device, saved)
    if isinstance(bags, BagCache):
        bags.close()
    model = _ensemble(cv, settings, cohort, bags, time_unit)
    if val_clinical is not None:
        val = as_cohort(val_clinical, store, columns, time_unit, outcome=True)
        _validate(model, store if val_features is None else val_features, val, missing, device)
    return model


def _ensemble(
    cv: CrossValidation, settings: FitSettings, cohort: Cohort, bags: PatientBags, time_unit: str
) -> CRCRSModel:
    """The delivered model: every fold model of ``cv``, its cutoff fixed on the out-of-fold
    CRCRS and its scale calibrated onto theirs."""
    time, event, oof = cohort.time, cohort.event, cv.oof
    cutoff = choose_cutoff(settings.cutoff, oof, time, event, MAXSTAT_MIN_FRACTION)
    scale, shift = _ensemble_calibration(oof, cv.ensemble_train)
    time_bins = [run.time_bins for run in cv.runs if run.time_bins is not None]
    extra: dict[str, Any] = {"runs": [{"seed": r.seed, "fold": r.fold} for r in cv.runs]}
    if time_bins:
        extra["time_bins"] = time_bins
    return CRCRSModel(
        [run.model for run in cv.runs],
        [run.centre for run in cv.runs],
        cutoff,
        scales=[run.scale for run in cv.runs],
        calibration=(scale, shift),
        feature_dim=bags.feature_dim,
        encoder=bags.encoder,
        time_unit=time_unit,
        settings=settings,
        training_cohort={**_summary(cohort, bags, time_unit), "crcrs_mean": float(np.mean(oof))},
        metrics=_metrics(cv, time, event, scale, shift),
        oof_predictions=_oof_table(cv, cohort, cutoff),
        extra=extra,
    )


def _oof_table(cv: CrossValidation, cohort: Cohort, cutoff: Cutoff) -> pd.DataFrame:
    """``oof_predictions.csv``: each training patient's out-of-fold CRCRS, group and fold."""
    return pd.DataFrame(
        {
            cohort.id_column: cohort.patient_ids,
            "crcrs": cv.oof,
            "risk_group": risk_group(cv.oof, cutoff),
            "time": cohort.time,
            "event": cohort.event,
            "fold": cv.oof_fold,
        }
    )


def _validate(
    model: CRCRSModel,
    features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore,
    cohort: Cohort,
    missing: str,
    device: torch.device,
) -> None:
    """Score the external validation ``cohort`` once with the finished ensemble; its table goes
    to ``model.validation_predictions``, its C and sizes to ``model.metrics["validation"]``."""
    settings = model.settings
    table = model.predict(
        features, cohort, missing=missing, batch_size=settings.batch_size, device=device
    )
    model.validation_predictions = table
    model.metrics["validation"] = {
        "source": cohort.source,
        "harrell_c": harrell_c(table["time"], table["event"], table["crcrs"]),
        "n_patients": len(table),
        "n_events": int(table["event"].sum()),
        "n_high": int((table["risk_group"] == "high").sum()),
    }


def _ensemble_calibration(oof: np.ndarray, ensemble_train: np.ndarray) -> tuple[float, float]:
    """``(scale, shift)`` that give the ensemble's scores of the training cohort the mean and sd
    of its out-of-fold scores (scale 1 where the ensemble is constant)."""
    sd_ensemble = float(np.std(ensemble_train))
    scale = float(np.std(oof)) / sd_ensemble if sd_ensemble > 1e-12 else 1.0
    return scale, float(np.mean(oof) - scale * np.mean(ensemble_train))


def _metrics(
    cv: CrossValidation, time: np.ndarray, event: np.ndarray, scale: float, shift: float
) -> dict[str, Any]:
    """``metrics.json``: C per model, mean and sd over seeds and folds, pooled out-of-fold C."""
    per_model = np.array([run.row["harrell_c"] for run in cv.runs])
    per_seed = [harrell_c(time, event, row) for row in cv.oof_per_seed]
    sd = float(np.nanstd(per_model, ddof=1)) if len(per_model) > 1 else 0.0
    return {
        "harrell_c_per_fold": per_model.tolist(),
        "harrell_c_mean": float(np.nanmean(per_model)),
        "harrell_c_sd": sd,
        "harrell_c_oof": harrell_c(time, event, cv.oof),
        "seeds": list(cv.seeds),
        "harrell_c_oof_per_seed": per_seed,
        "n_patients": len(time),
        "n_events": int(np.sum(event)),
        "folds": [{"seed": run.seed, **run.row} for run in cv.runs],
        "scale": {
            "oof_mean": float(np.mean(cv.oof)),
            "oof_sd": float(np.std(cv.oof)),
            "ensemble_sd_before_calibration": float(np.std(cv.ensemble_train)),
            "ensemble_scale": scale,
            "ensemble_shift": shift,
        },
        "note": "each fold's C is scored by the model that never saw that fold; mean and sd are "
        "over seeds and folds; early stopping used an inner validation split of the training "
        "folds",
    }


def _summary(cohort: Cohort, bags: PatientBags, time_unit: str) -> dict[str, Any]:
    n_slides = sum(len(s) for s in cohort.slides.values())
    return {
        "source": cohort.source,
        "n_patients": len(cohort),
        "n_slides": n_slides,
        "n_events": int(cohort.event.sum()),
        "time_unit": time_unit,
        "time_median": float(np.median(cohort.time)),
        "time_max": float(cohort.time.max()),
        "feature_dim": bags.feature_dim,
        "encoder": bags.encoder,
    }
