"""``fit``: cross-validated training of the CRCRS model.

What :func:`fit` does, in order:

1. reads the cohort and its feature files; every patient's slides form one bag;
2. splits the patients into K folds stratified by event (:func:`~mil_crcrs.splits.kfold_splits`);
   each fold's training part also gives up an inner validation split for early stopping;
3. trains one model per fold on the other K - 1 folds (:func:`~mil_crcrs.training.train_model`),
   early-stopping on the inner validation split (its C or its loss, optionally smoothed over
   epochs and with the last epochs' weights averaged), never on the fold it reports;
4. scores each fold with the model that never saw it: the **out-of-fold** CRCRS, and the
   cross-validated Harrell C per fold (mean and sd over folds);
5. fixes the high/low cutoff on the **out-of-fold** CRCRS of the training cohort;
6. optionally scores an external validation cohort with the finished ensemble.

The delivered model is the **ensemble of the K fold models**; the CRCRS of a new patient is the
mean of the fold models' centred risks (see :mod:`mil_crcrs.model_dir`).

Why the cutoff comes from the out-of-fold scores rather than the ensemble's scores of the training
patients: each training patient was seen by K - 1 of the K models, so the ensemble's scores of
them are *apparent*, fitted to their own outcomes. A cutoff searched on them (maxstat above all)
would be placed where the training outcomes happen to separate, and the high/low split of the
training cohort would look better than it is. An out-of-fold score is what a model says about a
patient it has not seen, which is the situation the cutoff is later applied in. The fold models'
risks are centred on a common baseline (their mean over the training cohort), so out-of-fold
scores and ensemble scores sit on the same scale; the ensemble averages K models and so spreads
its scores somewhat less than a single model, which matters little for the median (near 0 for
both) and is the price of an honest cutoff.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mil_crcrs.bags import PatientBags
from mil_crcrs.cohort import TIME_UNITS, Cohort, Columns, read_cohort
from mil_crcrs.cutoff import CUTOFF_METHODS, choose_cutoff, risk_group
from mil_crcrs.errors import InputError
from mil_crcrs.losses import TIES, cox_nll, discrete_time_nll, make_time_bins
from mil_crcrs.metrics import harrell_c
from mil_crcrs.model_dir import CRCRSModel
from mil_crcrs.models import create_model, list_models
from mil_crcrs.splits import describe_folds, kfold_splits
from mil_crcrs.standardize import attach_feature_norm, feature_moments
from mil_crcrs.store import FeatureStore
from mil_crcrs.training import (
    MONITORS,
    SCHEDULES,
    LossFn,
    predict_risk,
    resolve_device,
    seeded,
    train_model,
)

LOSS_NAMES = ("cox", "discrete")
#: Smallest share of patients in either group for the maxstat cutoff.
MAXSTAT_MIN_FRACTION = 0.1


@dataclass(frozen=True)
class FitSettings:
    """How :func:`fit` trains; saved in the model directory's ``config.json``.

    Parameters
    ----------
    model : registered aggregator name ("abmil", "mean", "max", "transmil")
    model_kwargs : the aggregator's own hyperparameters (e.g. ``hidden_dim``, ``dropout``)
    folds : K of the K-fold cross-validation (at least 2)
    epochs : the most epochs per fold model
    batch_size : the smallest number of bags per optimiser step (the Cox risk set)
    lr, weight_decay : AdamW's learning rate and decoupled weight decay
    schedule : "cosine" or "onecycle", stepped per batch
    clip_norm : gradient-norm clip (0 = none)
    max_tiles : random subset of at most this many tiles per bag in training (None = all);
        prediction always uses every tile
    standardize : standardise each feature dimension, ``(x - mean) / sd``, with mean and sd
        pooled over the tiles of each fold's training part (see :mod:`mil_crcrs.standardize`);
        the statistics are stored in every fold model and applied wherever it is used
    loss : "cox" (partial likelihood) or "discrete" (discrete-time hazards)
    ties : "efron" or "breslow", for the Cox loss
    n_bins : number of time bins of the discrete-time loss
    inner_val_fraction : share of each fold's training part held out for early stopping (0 =
        train every epoch, no early stopping)
    patience : stop after this many epochs without a better (smoothed) monitored value
    monitor : what early stopping watches on the inner split: "c" (Harrell's C) or "loss" (the
        training loss over the whole inner split: the Cox partial likelihood, or the
        discrete-time likelihood)
    min_epochs : no epoch before this one is kept or counts towards ``patience``
    smooth_epochs : compare the mean of the monitored value over this many last epochs
    average_epochs : keep the average of the weights of this many last epochs up to the chosen
        one (1 = that epoch's own weights); see :class:`~mil_crcrs.training.EarlyStopping`
    cutoff : "median" or "maxstat" (each group at least 10% of patients)
    seed : seeds folds, initialisation, shuffling, subsampling and dropout
    device : "auto", "cpu" or "cuda"
    progress : show progress bars
    """

    model: str = "abmil"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    folds: int = 5
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    clip_norm: float = 1.0
    max_tiles: int | None = None
    standardize: bool = False
    loss: str = "cox"
    ties: str = "efron"
    n_bins: int = 4
    inner_val_fraction: float = 0.2
    patience: int = 10
    monitor: str = "c"
    min_epochs: int = 1
    smooth_epochs: int = 1
    average_epochs: int = 1
    cutoff: str = "median"
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model not in list_models():
            raise InputError(
                f"unknown model {self.model!r}; known models: {', '.join(list_models())}"
            )
        checks = [
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (self.loss in LOSS_NAMES, f"--loss must be one of {', '.join(LOSS_NAMES)}"),
            (self.ties in TIES, f"--ties must be one of {', '.join(TIES)}"),
            (self.cutoff in CUTOFF_METHODS, f"--cutoff must be one of {', '.join(CUTOFF_METHODS)}"),
            (self.folds >= 2, f"--folds must be at least 2, got {self.folds}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be at least 2, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.clip_norm >= 0, f"clip norm must be >= 0, got {self.clip_norm}"),
            (
                self.max_tiles is None or self.max_tiles >= 1,
                f"--max-tiles must be at least 1, got {self.max_tiles}",
            ),
            (self.n_bins >= 2, f"n_bins must be at least 2, got {self.n_bins}"),
            (
                0 <= self.inner_val_fraction < 0.5,
                f"inner_val_fraction must be in [0, 0.5), got {self.inner_val_fraction}",
            ),
            (self.patience >= 1, f"patience must be at least 1, got {self.patience}"),
            (self.monitor in MONITORS, f"monitor must be one of {', '.join(MONITORS)}"),
            (self.min_epochs >= 1, f"min_epochs must be at least 1, got {self.min_epochs}"),
            (
                self.smooth_epochs >= 1,
                f"smooth_epochs must be at least 1, got {self.smooth_epochs}",
            ),
            (
                self.average_epochs >= 1,
                f"average_epochs must be at least 1, got {self.average_epochs}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        reserved = {"name", "in_dim", "n_outputs"} & set(self.model_kwargs)
        if reserved:
            raise InputError(
                f"model_kwargs may not set {', '.join(sorted(reserved))}; fit chooses them"
            )


def make_loss(settings: FitSettings, edges: np.ndarray | None = None) -> LossFn:
    """The training loss: ``loss_fn(output, time, event) -> scalar`` for ``settings.loss``."""
    if settings.loss == "cox":
        ties = settings.ties

        def cox(output, time, event):
            return cox_nll(output.risk, time, event, ties=ties)

        return cox
    if edges is None:
        raise ValueError("the discrete-time loss needs time-bin edges")

    def discrete(output, time, event):
        return discrete_time_nll(output.logits, time, event, edges)

    return discrete


def fit(
    features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore,
    clinical: str | os.PathLike | pd.DataFrame | Cohort,
    settings: FitSettings = FitSettings(),
    columns: Columns = Columns(),
    time_unit: str = "days",
    missing: str = "error",
    val_clinical: str | os.PathLike | pd.DataFrame | Cohort | None = None,
    val_features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore | None = None,
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
        raise InputError(f"time unit must be one of {', '.join(TIME_UNITS)}, got {time_unit!r}")
    if val_features is not None and val_clinical is None:
        raise InputError("--val-features needs --val-clinical (the validation cohort's table)")
    device = resolve_device(settings.device)
    store = features if isinstance(features, FeatureStore) else FeatureStore(features)
    if len(store) == 0:
        raise InputError(f"{features}: no feature files (.h5 or .pt) found")
    cohort = clinical if isinstance(clinical, Cohort) else read_cohort(clinical, columns, time_unit)
    cohort = cohort.require_outcome().match_features(store.slide_ids, missing).require_outcome()
    folds = kfold_splits(
        cohort.event, settings.folds, settings.inner_val_fraction, settings.seed, cohort.source
    )
    bags = PatientBags(cohort, store, cache=True)
    time, event = cohort.time, cohort.event
    n = len(cohort)
    n_outputs = settings.n_bins if settings.loss == "discrete" else 1

    fold_seeds = [
        s.generate_state(2) for s in np.random.SeedSequence(settings.seed).spawn(len(folds))
    ]
    models, offsets, fold_rows, time_bins = [], [], [], []
    oof = np.full(n, np.nan)
    oof_fold = np.zeros(n, dtype=np.int64)
    for fold, (init_seed, train_seed) in zip(folds, fold_seeds, strict=True):
        edges = None
        if settings.loss == "discrete":
            edges = make_time_bins(time[fold.train], event[fold.train], settings.n_bins)
            time_bins.append(np.asarray(edges).tolist())
        with seeded(int(init_seed), device):
            model = create_model(
                settings.model,
                in_dim=bags.feature_dim,
                n_outputs=n_outputs,
                **settings.model_kwargs,
            )
        if settings.standardize:
            # Training and inner-validation patients only: the reported fold stays unseen.
            training_part = np.concatenate([fold.train, fold.inner_val])
            attach_feature_norm(model, *feature_moments(bags, training_part))
        result = train_model(
            model,
            bags,
            time,
            event,
            fold.train,
            fold.inner_val,
            make_loss(settings, edges),
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            schedule=settings.schedule,
            clip_norm=settings.clip_norm,
            max_tiles=settings.max_tiles,
            patience=settings.patience,
            monitor=settings.monitor,
            min_epochs=settings.min_epochs,
            smooth_epochs=settings.smooth_epochs,
            average_epochs=settings.average_epochs,
            seed=int(train_seed),
            device=device,
            progress=settings.progress,
            desc=f"fold {fold.index + 1}/{len(folds)}",
        )
        risk = predict_risk(result.model, bags, batch_size=settings.batch_size, device=device)
        offset = float(risk.mean())
        oof[fold.test] = risk[fold.test] - offset
        oof_fold[fold.test] = fold.index + 1
        models.append(result.model.cpu())
        offsets.append(offset)
        fold_rows.append(
            {
                "fold": fold.index + 1,
                "harrell_c": harrell_c(time[fold.test], event[fold.test], risk[fold.test]),
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "inner_val_c": result.best_val_c,
            }
        )

    cutoff = choose_cutoff(settings.cutoff, oof, time, event, MAXSTAT_MIN_FRACTION)
    oof_predictions = pd.DataFrame(
        {
            "patient_id": cohort.patient_ids,
            "crcrs": oof,
            "risk_group": risk_group(oof, cutoff),
            "time": time,
            "event": event,
            "fold": oof_fold,
        }
    )
    per_fold = np.array([row["harrell_c"] for row in fold_rows])
    split_rows = describe_folds(folds, event)
    for row, split in zip(fold_rows, split_rows, strict=True):
        row.update({k: v for k, v in split.items() if k != "fold"})
    metrics: dict[str, Any] = {
        "harrell_c_per_fold": per_fold.tolist(),
        "harrell_c_mean": float(np.nanmean(per_fold)),
        "harrell_c_sd": float(np.nanstd(per_fold, ddof=1)) if len(per_fold) > 1 else 0.0,
        "harrell_c_oof": harrell_c(time, event, oof),
        "n_patients": n,
        "n_events": int(event.sum()),
        "folds": fold_rows,
        "note": "each fold's C is scored by the model that never saw that fold; early stopping "
        "used an inner validation split of the training folds",
    }
    model = CRCRSModel(
        models,
        offsets,
        cutoff,
        feature_dim=bags.feature_dim,
        encoder=bags.encoder,
        time_unit=time_unit,
        settings=settings,
        training_cohort=_summary(cohort, bags, time_unit),
        metrics=metrics,
        oof_predictions=oof_predictions,
        extra={"time_bins": time_bins} if time_bins else None,
    )
    if val_clinical is not None:
        val_store = store if val_features is None else val_features
        val = (
            val_clinical
            if isinstance(val_clinical, Cohort)
            else read_cohort(val_clinical, columns, time_unit)
        )
        val = val.require_outcome()
        table = model.predict(
            val_store, val, missing=missing, batch_size=settings.batch_size, device=device
        )
        model.validation_predictions = table
        model.metrics["validation"] = {
            "source": val.source,
            "harrell_c": harrell_c(table["time"], table["event"], table["crcrs"]),
            "n_patients": len(table),
            "n_events": int(table["event"].sum()),
            "n_high": int((table["risk_group"] == "high").sum()),
        }
    return model


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
