"""The high/low cutoff: median, and the maximally selected log-rank statistic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lifelines.statistics import logrank_test

from mil_crcrs.errors import InputError
from mil_crcrs.train.cutoff import (
    Cutoff,
    choose_cutoff,
    maxstat_cutoff,
    median_cutoff,
    risk_group,
)


def _cohort(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(scale=np.exp(-risk)) * 100
    event = (rng.random(n) < 0.7).astype(int)
    return risk, time, event


def _brute_force_maxstat(risk, time, event, min_fraction):
    """Every split point between sorted patients, scored by lifelines' log-rank test."""
    n = risk.size
    min_size = math.ceil(min_fraction * n)
    order = np.sort(risk)
    best_stat, best_value = -np.inf, None
    for i in range(n):
        value = order[i]
        high = risk > value
        if high.sum() < min_size or (~high).sum() < min_size:
            continue
        stat = logrank_test(time[high], time[~high], event[high], event[~high]).test_statistic
        if stat > best_stat:
            best_stat, best_value = stat, value
    return best_value, best_stat


def test_risk_group_is_high_strictly_above_the_cutoff():
    groups = risk_group(np.array([-1.0, 0.0, 0.5, 2.0]), 0.0)
    assert list(groups) == ["low", "low", "high", "high"]


def test_median_cutoff_splits_in_half():
    cut = median_cutoff(np.array([4.0, 1.0, 3.0, 2.0]))
    assert cut.value == 2.5 and cut.method == "median"
    assert (cut.n_high, cut.n_low) == (2, 2)


def test_maxstat_matches_brute_force_with_lifelines():
    risk, time, event = _cohort()
    cut = maxstat_cutoff(risk, time, event, min_fraction=0.1)
    value, stat = _brute_force_maxstat(risk, time, event, 0.1)
    assert cut.value == value
    assert cut.statistic == pytest.approx(stat, rel=1e-12)


def test_maxstat_leaves_at_least_ten_percent_per_group():
    # The single earliest death has by far the highest risk: without the 10% rule the best split
    # would isolate that one patient.
    risk, time, event = _cohort(n=50, seed=3)
    risk[np.argmin(time)] = 100.0
    event[np.argmin(time)] = 1
    cut = maxstat_cutoff(risk, time, event, min_fraction=0.1)
    groups = risk_group(risk, cut)
    assert (groups == "high").sum() >= 5 and (groups == "low").sum() >= 5
    assert cut.n_high == (groups == "high").sum()


def test_maxstat_finds_a_planted_separation():
    # Patients with risk > 0 all die early; the others are censored late: the best split is at 0.
    risk = np.array([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, -4.0, -5.0])
    time = np.where(risk > 0, 1.0 + risk, 50.0 + risk)
    event = (risk > 0).astype(int)
    cut = maxstat_cutoff(risk, time, event)
    assert cut.value == 0.0
    assert list(risk_group(risk, cut)) == list(np.where(risk > 0, "high", "low"))


def test_stored_cutoff_is_applied_unchanged():
    risk, time, event = _cohort()
    cut = choose_cutoff("maxstat", risk, time, event)
    restored = Cutoff.from_dict(cut.to_dict())
    other = np.array([cut.value - 1e-9, cut.value, cut.value + 1e-9])
    assert list(risk_group(other, restored)) == ["low", "low", "high"]


def test_maxstat_errors_are_clear():
    with pytest.raises(InputError, match="no events"):
        maxstat_cutoff(np.arange(10.0), np.arange(10.0), np.zeros(10))
    with pytest.raises(InputError, match="no split"):
        maxstat_cutoff(np.ones(10), np.arange(10.0), np.ones(10))
    with pytest.raises(InputError, match="unknown cutoff method"):
        choose_cutoff("tertile", np.arange(10.0))
