"""Patient-level stratified K-fold splits with an inner validation split."""

from __future__ import annotations

import numpy as np
import pytest

from mil_crcrs.errors import InputError
from mil_crcrs.train.splits import inner_split, kfold_splits


def _events(n: int = 50, rate: float = 0.4, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < rate).astype(int)


def test_every_patient_is_reported_exactly_once():
    event = _events()
    folds = kfold_splits(event, n_folds=5, seed=1)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(event.size))


def test_inner_validation_is_carved_from_the_training_folds_only():
    event = _events()
    for fold in kfold_splits(event, n_folds=5, inner_val_fraction=0.25, seed=2):
        train, val, test = set(fold.train), set(fold.inner_val), set(fold.test)
        assert val and not (val & test) and not (val & train) and not (train & test)
        assert train | val | test == set(range(event.size))
        assert event[fold.inner_val].sum() >= 1 and event[fold.train].sum() >= 1


def test_folds_are_stratified_by_event():
    event = _events(n=100, rate=0.3)
    for fold in kfold_splits(event, n_folds=5):
        assert abs(event[fold.test].sum() - event.sum() / 5) <= 1


def test_same_seed_same_folds_and_other_seed_other_folds():
    event = _events()
    a = kfold_splits(event, 4, seed=7)
    b = kfold_splits(event, 4, seed=7)
    c = kfold_splits(event, 4, seed=8)
    assert all(np.array_equal(x.test, y.test) for x, y in zip(a, b, strict=True))
    assert all(np.array_equal(x.inner_val, y.inner_val) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.test, y.test) for x, y in zip(a, c, strict=True))


def test_no_inner_validation_when_fraction_is_zero():
    folds = kfold_splits(_events(), 3, inner_val_fraction=0.0)
    assert all(f.inner_val.size == 0 for f in folds)


def test_fewer_patients_than_folds():
    with pytest.raises(InputError, match="3 patient.*fewer than the 5 folds"):
        kfold_splits([1, 0, 1], 5)


def test_no_events():
    with pytest.raises(InputError, match="no events"):
        kfold_splits(np.zeros(20, dtype=int), 5)


def test_fewer_events_than_folds_says_reduce_k():
    event = np.zeros(30, dtype=int)
    event[:3] = 1
    with pytest.raises(InputError, match="fold would have no event.*reduce folds to 3"):
        kfold_splits(event, 5)


def test_inner_split_keeps_an_event_on_both_sides_and_needs_two():
    positions = np.arange(10, 20)
    event = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    train, val = inner_split(positions, event, 0.3, seed=0, source="x")
    assert event[val - 10].sum() == 1 and event[train - 10].sum() == 1
    assert val.size == 3 and train.size == 7
    with pytest.raises(InputError, match="too few for an inner validation split"):
        inner_split(positions, np.eye(10, dtype=int)[0], 0.3, seed=0, source="x")


def test_too_few_events_for_the_inner_split_advises_what_helps():
    # 3 events in 12 patients: with 2 folds a training part can hold a single event (too few for
    # early stopping); with 3 folds every training part holds two. The advice must say so.
    event = np.array([1, 1, 1] + [0] * 9)
    with pytest.raises(InputError, match="use more folds") as err:
        kfold_splits(event, 2, inner_val_fraction=0.2, seed=0)
    assert "fewer folds" not in str(err.value) and "inner_val_fraction" in str(err.value)
    folds = kfold_splits(event, 3, inner_val_fraction=0.2, seed=0)
    assert all(event[f.inner_val].sum() >= 1 for f in folds)
