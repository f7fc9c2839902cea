"""Patient-level cross-validation splits, stratified by event.

Each of the K folds is reported once, by the model trained on the other K - 1 folds. That model's
early stopping looks at an *inner validation* split carved out of its own training folds, never at
the reported fold: scoring the reported fold for early stopping (or for any choice) makes the
reported C-index optimistic.

Splits are made on patients, so all of a patient's slides fall on the same side.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold

from mil_crcrs.errors import InputError, SettingError


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold, as positions into the cohort's patient list.

    Attributes
    ----------
    index : fold number, 0-based
    train : (n_train,) int64 positions the fold model is fitted on
    inner_val : (n_val,) int64 positions scored for early stopping (disjoint from ``train``;
        together they are the training folds)
    test : (n_test,) int64 positions of the reported fold
    """

    index: int
    train: np.ndarray
    inner_val: np.ndarray
    test: np.ndarray


def kfold_splits(
    event: Sequence[int] | np.ndarray,
    n_folds: int,
    inner_val_fraction: float = 0.2,
    seed: int = 0,
    source: str = "the training cohort",
) -> list[Fold]:
    """Stratified K-fold splits with an inner validation split in each training part.

    Parameters
    ----------
    event : (n_patients,) int, 1 = event, 0 = censored
    n_folds : K, at least 2
    inner_val_fraction : share of each training part held out for early stopping; 0 disables it
    seed : seed for the shuffles (the same seed gives the same folds)
    source : how to name the cohort in error messages

    Returns
    -------
    list of K :class:`Fold`; every patient is in exactly one ``test``.

    Raises
    ------
    InputError
        Fewer patients than folds, no events, fewer events than folds (a fold would have no
        event to score), or too few events in a training part for an inner validation split.
    """
    event = np.asarray(event, dtype=np.int64).reshape(-1)
    n = event.size
    n_events = int(event.sum())
    if n_folds < 2:
        raise SettingError("folds", f"must be at least 2, got {n_folds}")
    if n < 2:
        raise InputError(f"{source} has {n} patient(s); cross-validation needs more")
    if n < n_folds:
        raise SettingError(
            "folds",
            f"is {n_folds}, but {source} has {n} patient(s), fewer than the {n_folds} folds; "
            f"use {n} folds or fewer",
        )
    if n_events == 0:
        raise InputError(
            f"{source} has no events (every patient is censored); a survival model needs some"
        )
    if n_events < 2:
        raise InputError(f"{source} has only {n_events} event, too few to cross-validate")
    if n_events < n_folds:
        raise SettingError(
            "folds",
            f"is {n_folds}, but {source} has only {n_events} event(s), so a fold would have no "
            f"event to score; reduce folds to {n_events} or fewer",
        )
    if not 0.0 <= inner_val_fraction < 1.0:
        raise SettingError("inner_val_fraction", f"must be in [0, 1), got {inner_val_fraction}")

    rng = np.random.default_rng(seed)
    outer = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=_sk_seed(rng))
    folds = []
    placeholder = np.zeros((n, 1))
    with warnings.catch_warnings():
        # sklearn warns when there are fewer censored patients than folds; that is harmless.
        warnings.simplefilter("ignore", UserWarning)
        outer_splits = list(outer.split(placeholder, event))
    for k, (train_part, test) in enumerate(outer_splits):
        if event[test].sum() == 0:  # cannot happen with n_events >= n_folds; kept as a guard
            raise SettingError("folds", f"is too many: fold {k + 1} of {source} has no events")
        if inner_val_fraction > 0:
            train, inner_val = inner_split(
                train_part,
                event[train_part],
                inner_val_fraction,
                _sk_seed(rng),
                f"the training folds of fold {k + 1} of {source}",
            )
        else:
            train, inner_val = train_part, np.zeros(0, dtype=np.int64)
        folds.append(
            Fold(index=k, train=np.sort(train), inner_val=np.sort(inner_val), test=np.sort(test))
        )
    return folds


def inner_split(
    positions: np.ndarray, event: np.ndarray, fraction: float, seed: int, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``positions`` (n,) into (train, validation), stratified by ``event`` (n,).

    The validation part gets ``round(fraction * n)`` patients (at least 2) with the events'
    share of the whole, rounded, but at least one event on each side. (Written out rather than
    taken from scikit-learn, whose stratified splitters refuse a class with a single member.)
    """
    positions = np.asarray(positions, dtype=np.int64)
    event = np.asarray(event, dtype=np.int64)
    n = positions.size
    n_val = max(2, int(round(fraction * n)))
    n_events = int(event.sum())
    if n_events < 2 or n - n_val < 2:
        raise SettingError(
            "inner_val_fraction",
            f"is {fraction}, but {source}: {n} patient(s) with {n_events} event(s) are too few "
            "for an inner validation split (early stopping); use more folds (each fold then "
            "trains on more patients), a smaller inner_val_fraction, or 0 (no early stopping)",
        )
    rng = np.random.default_rng(seed)
    val = []
    # Stratify: take the same share of events and of censored patients, rounding so the total is
    # n_val, with at least one event on each side.
    n_val_events = min(n_events - 1, max(1, round(n_val * n_events / n)))
    n_val_censored = min(n - n_events, n_val - n_val_events)
    for label, k in ((1, n_val_events), (0, n_val_censored)):
        members = np.flatnonzero(event == label)
        val.append(rng.choice(members, size=k, replace=False) if k else members[:0])
    val_idx = np.concatenate(val)
    is_val = np.zeros(n, dtype=bool)
    is_val[val_idx] = True
    return positions[~is_val], positions[is_val]


def _sk_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def describe_folds(folds: Sequence[Fold], event: np.ndarray) -> list[dict[str, int]]:
    """Patients and events per part of each fold, for the model's config."""
    event = np.asarray(event)
    return [
        {
            "fold": f.index,
            "n_train": int(f.train.size),
            "n_inner_val": int(f.inner_val.size),
            "n_test": int(f.test.size),
            "events_test": int(event[f.test].sum()),
        }
        for f in folds
    ]
