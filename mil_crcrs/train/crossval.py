"""The cross-validation loop of :func:`~mil_crcrs.fitting.fit`: one model per seed and fold.

For every seed in ``FitSettings.seeds`` (repeated cross-validation), the patients are split into
K folds with that seed and one model is trained per fold on the other K - 1 folds, its
initialisation, shuffling and dropout drawn from the same seed. Each model's risk is then put on
a common scale, **standardised on its own training part**::

    z_m(x) = (risk_m(x) - centre_m) / scale_m

with ``centre_m`` and ``scale_m`` the mean and sd of model ``m``'s risk over the patients it was
trained on (its training and inner-validation patients, never its reported fold). A Cox partial
likelihood pins down neither an additive constant nor, on small cohorts, a common spread, so raw
risks of different fold models are not comparable; standardised, each says "sd units above the
average patient it learnt from", and a pooled out-of-fold ranking or cutoff no longer favours
the fold model with the widest spread.

A patient's **out-of-fold** score is ``z`` from the model that held them out, averaged over
seeds (one such model per seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mil_crcrs.data.bags import PatientBags
from mil_crcrs.models import MILModel, create_model
from mil_crcrs.runlog import Eta, progress_log
from mil_crcrs.stats.metrics import harrell_c
from mil_crcrs.train.checkpoints import FoldCheckpoints
from mil_crcrs.train.loop import TrainSettings, predict_risk, seeded, train_model
from mil_crcrs.train.losses import make_loss, make_time_bins
from mil_crcrs.train.settings import FitSettings, training_autocast
from mil_crcrs.train.splits import Fold, describe_folds, kfold_splits
from mil_crcrs.train.standardize import attach_feature_norm, feature_moments


@dataclass
class ModelRun:
    """One trained model of the repeated cross-validation.

    Attributes
    ----------
    seed, fold : the seed and the 1-based fold it was trained for
    model : the trained model (on the CPU, eval mode)
    centre, scale : mean and sd of its risk over its training part
    row : what ``metrics.json`` reports about it (C of its fold, epochs, split sizes)
    time_bins : the discrete-time loss's bin edges, or None
    """

    seed: int
    fold: int
    model: MILModel
    centre: float
    scale: float
    row: dict[str, Any]
    time_bins: list[float] | None = None


@dataclass
class CrossValidation:
    """What :func:`cross_validate` returns.

    Attributes
    ----------
    runs : one :class:`ModelRun` per seed and fold, seed by seed
    oof : (n,) each patient's out-of-fold standardised risk, mean over seeds
    oof_per_seed : (n_seeds, n) the same, seed by seed
    oof_fold : (n,) 1-based fold of each patient under the first seed
    ensemble_train : (n,) mean over every model of its standardised risk, for every training
        patient (apparent: all but one model per seed saw the patient)
    """

    runs: list[ModelRun]
    oof: np.ndarray
    oof_per_seed: np.ndarray
    oof_fold: np.ndarray
    ensemble_train: np.ndarray
    seeds: tuple[int, ...] = field(default_factory=tuple)


def cross_validate(
    settings: FitSettings,
    bags: PatientBags,
    time: np.ndarray,
    event: np.ndarray,
    source: str,
    device: torch.device,
    checkpoints: FoldCheckpoints | None = None,
) -> CrossValidation:
    """Train one model per seed and fold; score every patient with every model.

    Parameters
    ----------
    settings : the fit settings (``seeds``: the seeds; the rest: how to train)
    bags : the cohort's bags; ``time`` and ``event`` are (n,) aligned with them
    source : how to name the cohort in error messages
    device : where to train
    checkpoints : where each finished model is saved, and taken from on a resume (None: none)

    Returns
    -------
    CrossValidation
    """
    n = len(bags)
    seeds = settings.run_seeds
    runs: list[ModelRun] = []
    oof_per_seed = np.full((len(seeds), n), np.nan)
    oof_fold = np.zeros(n, dtype=np.int64)
    ensemble_sum = np.zeros(n)
    eta = Eta(len(seeds) * settings.folds)
    for r, seed in enumerate(seeds):
        folds = kfold_splits(event, settings.folds, settings.inner_val_fraction, seed, source)
        fold_seeds = [s.generate_state(2) for s in np.random.SeedSequence(seed).spawn(len(folds))]
        split_rows = describe_folds(folds, event)
        for fold, (init_seed, train_seed), split in zip(folds, fold_seeds, split_rows, strict=True):
            desc = f"fold {fold.index + 1}/{len(folds)}"
            if len(seeds) > 1:
                desc = f"seed {seed} {desc}"
            key = f"seed{seed}_fold{fold.index + 1}"
            seeds_ = (int(init_seed), int(train_seed))
            resumed = _resume_fold(checkpoints, key, settings, bags, fold, seeds_, device)
            if resumed is None:
                run, risk = _train_fold(settings, bags, time, event, fold, seeds_, device, desc)
                if checkpoints is not None:
                    info = {"centre": run.centre, "scale": run.scale, "row": run.row}
                    checkpoints.save(key, run.model, risk, {**info, "time_bins": run.time_bins})
            else:
                run, risk = resumed
            run.seed = seed
            run.row.update({k: v for k, v in split.items() if k != "fold"})
            z = (risk - run.centre) / run.scale
            oof_per_seed[r, fold.test] = z[fold.test]
            ensemble_sum += z
            if r == 0:
                oof_fold[fold.test] = fold.index + 1
            runs.append(run)
            where = f" (seed {seed}, fold {fold.index + 1})" if len(seeds) > 1 else ""
            progress_log.info(
                "%s %s%s: Harrell C %.3f, best epoch %d of %d",
                "model" if len(seeds) > 1 else "fold",
                eta.step(),
                where,
                run.row["harrell_c"],
                run.row["best_epoch"],
                run.row["epochs_run"],
            )
    return CrossValidation(
        runs=runs,
        oof=oof_per_seed.mean(axis=0),
        oof_per_seed=oof_per_seed,
        oof_fold=oof_fold,
        ensemble_train=ensemble_sum / len(runs),
        seeds=seeds,
    )


def _new_model(
    settings: FitSettings, bags: PatientBags, fold: Fold, init_seed: int, device: torch.device
) -> tuple[MILModel, np.ndarray]:
    """Fold ``fold``'s freshly initialised model, and its training part (positions)."""
    with seeded(init_seed, device):
        model = create_model(
            settings.model,
            in_dim=bags.feature_dim,
            n_outputs=settings.n_bins if settings.loss == "discrete" else 1,
            **settings.model_kwargs,
        )
    model.autocast_dtype = training_autocast(settings.precision, device)
    # The fold's training part: its training and inner-validation patients, never its test fold.
    training_part = np.sort(np.concatenate([fold.train, fold.inner_val]))
    if settings.standardize:
        attach_feature_norm(model, *feature_moments(bags, training_part))
    return model, training_part


def _resume_fold(
    checkpoints: FoldCheckpoints | None,
    key: str,
    settings: FitSettings,
    bags: PatientBags,
    fold: Fold,
    seeds: tuple[int, int],
    device: torch.device,
) -> tuple[ModelRun, np.ndarray] | None:
    """The run saved under ``key`` by an interrupted fit, and its risk; None if not saved."""
    if checkpoints is None:
        return None
    model, _ = _new_model(settings, bags, fold, seeds[0], device)
    saved = checkpoints.load(key, model)
    if saved is None:
        return None
    model.load_state_dict(saved.state)
    info = saved.info
    run = ModelRun(
        0, fold.index + 1, model.cpu().eval(), info["centre"], info["scale"], info["row"]
    )
    run.time_bins = info["time_bins"]
    return run, saved.risk


def _train_fold(
    settings: FitSettings,
    bags: PatientBags,
    time: np.ndarray,
    event: np.ndarray,
    fold: Fold,
    seeds: tuple[int, int],
    device: torch.device,
    desc: str,
) -> tuple[ModelRun, np.ndarray]:
    """Train fold ``fold``'s model (``seeds``: initialisation, training); returns the run and
    its risk (n,) for every patient of ``bags``."""
    edges = None
    if settings.loss == "discrete":
        edges = make_time_bins(time[fold.train], event[fold.train], settings.n_bins)
    model, training_part = _new_model(settings, bags, fold, seeds[0], device)
    result = train_model(
        model,
        bags,
        time,
        event,
        fold.train,
        fold.inner_val,
        make_loss(settings, edges),
        settings=TrainSettings.from_fit(settings),
        seed=seeds[1],
        device=device,
        desc=desc,
    )
    risk = predict_risk(result.model, bags, batch_size=settings.batch_size, device=device)
    centre = float(risk[training_part].mean())
    scale = float(risk[training_part].std())
    if not np.isfinite(scale) or scale <= 1e-12 * (1.0 + abs(centre)):
        scale = 1.0  # a constant model: centred only
    best = result.history[result.best_epoch - 1] if result.history else {}
    row = {
        "fold": fold.index + 1,
        "harrell_c": harrell_c(time[fold.test], event[fold.test], risk[fold.test]),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "inner_val_c": result.best_val_c,
        "inner_val_loss": float(best.get("val_loss", float("nan"))),
    }
    bins = None if edges is None else np.asarray(edges).tolist()
    run = ModelRun(0, fold.index + 1, result.model.cpu(), centre, scale, row, bins)
    return run, risk
