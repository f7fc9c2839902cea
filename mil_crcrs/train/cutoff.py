"""The cutoff that splits a risk score into ``high`` and ``low`` groups.

A cutoff is chosen once, on the training cohort, stored with the model and applied unchanged to
every later cohort: re-choosing it on a validation cohort would make that validation optimistic.
A patient is ``high`` when their risk is strictly greater than the cutoff, ``low`` otherwise.

Two methods:

- ``median``: the median risk of the training cohort;
- ``maxstat``: the maximally selected log-rank statistic (as in R's ``maxstat`` package): the
  observed risk value whose split gives the largest log-rank chi-square, among the splits that
  leave each group with at least ``min_fraction`` of the patients. The log-rank test is
  lifelines' :func:`~lifelines.statistics.logrank_test`. The naive p-value of the chosen split
  ignores that the split was searched for, so it is not reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mil_crcrs.errors import InputError

CUTOFF_METHODS = ("median", "maxstat")
HIGH, LOW = "high", "low"


@dataclass(frozen=True)
class Cutoff:
    """A fixed risk cutoff and how it was chosen.

    Attributes
    ----------
    value : risk above which a patient is ``high``
    method : "median" or "maxstat"
    statistic : the log-rank chi-square of the training split (maxstat only)
    min_fraction : the smallest allowed group share (maxstat only)
    n_high, n_low : group sizes on the cohort the cutoff was chosen on
    """

    value: float
    method: str
    statistic: float | None = None
    min_fraction: float | None = None
    n_high: int = 0
    n_low: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cutoff:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def risk_group(risk: np.ndarray, cutoff: float | Cutoff) -> np.ndarray:
    """Label each risk ``"high"`` (risk > cutoff) or ``"low"``.

    Parameters
    ----------
    risk : (n,) float
    cutoff : a value, or a :class:`Cutoff`

    Returns
    -------
    (n,) object array of "high" / "low"
    """
    value = cutoff.value if isinstance(cutoff, Cutoff) else float(cutoff)
    risk = np.asarray(risk, dtype=np.float64)
    if not (np.isfinite(value) and np.isfinite(risk).all()):
        raise ValueError("a non-finite risk or cutoff has no risk group")
    return np.where(risk > value, HIGH, LOW).astype(object)


def median_cutoff(risk: np.ndarray) -> Cutoff:
    """The median of ``risk`` (n,) as a cutoff."""
    risk = _check_risk(risk)
    value = float(np.median(risk))
    n_high = int((risk > value).sum())
    return Cutoff(value=value, method="median", n_high=n_high, n_low=risk.size - n_high)


def maxstat_cutoff(
    risk: np.ndarray, time: np.ndarray, event: np.ndarray, min_fraction: float = 0.1
) -> Cutoff:
    """The maximally selected log-rank cutoff.

    Every distinct risk value ``c`` is a candidate split (``high`` = risk > c); a candidate is
    allowed when each group holds at least ``ceil(min_fraction * n)`` patients. The allowed
    candidate with the largest log-rank chi-square wins (the smallest such ``c`` on a tie).

    Parameters
    ----------
    risk : (n,) float, higher = worse
    time : (n,) float follow-up times
    event : (n,) int, 1 = event, 0 = censored
    min_fraction : smallest share of patients allowed in either group, in (0, 0.5]

    Raises
    ------
    InputError
        When no split leaves both groups large enough (too few distinct risk values), or the
        cohort has no event.
    """
    from lifelines.statistics import logrank_test

    risk = _check_risk(risk)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.int64)
    if not 0.0 < min_fraction <= 0.5:
        raise ValueError(f"min_fraction must be in (0, 0.5], got {min_fraction}")
    if event.sum() == 0:
        raise InputError("maxstat cutoff: no events in the cohort, a log-rank test needs some")
    n = risk.size
    min_size = max(1, math.ceil(min_fraction * n))
    best: tuple[float, float, int] | None = None
    for c in np.unique(risk):
        high = risk > c
        n_high = int(high.sum())
        if n_high < min_size or n - n_high < min_size:
            continue
        stat = float(
            logrank_test(time[high], time[~high], event[high], event[~high]).test_statistic
        )
        if best is None or stat > best[0]:
            best = (stat, float(c), n_high)
    if best is None:
        raise InputError(
            f"maxstat cutoff: no split of the {n} risk values leaves at least "
            f"{min_fraction:.0%} of patients in each group; use the median cutoff"
        )
    stat, value, n_high = best
    return Cutoff(
        value=value,
        method="maxstat",
        statistic=stat,
        min_fraction=min_fraction,
        n_high=n_high,
        n_low=n - n_high,
    )


def choose_cutoff(
    method: str,
    risk: np.ndarray,
    time: np.ndarray | None = None,
    event: np.ndarray | None = None,
    min_fraction: float = 0.1,
) -> Cutoff:
    """Choose a cutoff with ``method`` ("median" or "maxstat"; maxstat needs time and event)."""
    if method == "median":
        return median_cutoff(risk)
    if method == "maxstat":
        if time is None or event is None:
            raise ValueError("the maxstat cutoff needs time and event")
        return maxstat_cutoff(risk, time, event, min_fraction=min_fraction)
    raise InputError(f"unknown cutoff method {method!r}; choose one of {', '.join(CUTOFF_METHODS)}")


def _check_risk(risk: np.ndarray) -> np.ndarray:
    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    if risk.size == 0:
        raise ValueError("no risk values to choose a cutoff from")
    if not np.isfinite(risk).all():
        raise ValueError("risk values contain NaN or inf")
    return risk
