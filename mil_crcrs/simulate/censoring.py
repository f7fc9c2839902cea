"""Censoring calibration: the drop-out rate that censors a chosen fraction of a cohort.

Both simulators censor with independent exponential drop-out and choose its rate so that a
target fraction of the patients ends up censored. :func:`censoring_rate` finds that rate for
any censored fraction that grows with the rate; the two fractions the simulators use are
:func:`censored_fraction` (drop-out before given event times) and
:func:`expected_censored_fraction` (exponential event times with an end of follow-up).
Neither has a closed-form inverse over a cohort of different event times or hazards, so the
rate is found by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_MAX_HALVINGS = 2000  # bisection of a float64 interval from 0 settles in fewer than 1,100


def censoring_rate(censored: Callable[[float], float], target: float) -> float:
    """The drop-out rate at which the censored fraction reaches ``target``.

    Parameters
    ----------
    censored : rate -> fraction of the cohort censored under exponential drop-out at that rate
        (per unit of time); non-decreasing in the rate
    target : the censored fraction wanted, in [0, 1)

    Returns
    -------
    float
        The rate, to the last bit that changes ``censored(rate) >= target``; 0 when no
        drop-out is needed (``censored(0) >= target``, e.g. an end of follow-up that alone
        censors that much).

    Raises
    ------
    ValueError
        if no finite rate censors ``target``.
    """
    if censored(0.0) >= target:
        return 0.0
    lo, hi = 0.0, 1.0
    while censored(hi) < target:
        hi *= 2.0
        if not math.isfinite(hi):
            raise ValueError(f"no drop-out rate censors a fraction of {target}")
    for _ in range(_MAX_HALVINGS):  # bisection until lo and hi are adjacent floats
        mid = (lo + hi) / 2.0
        if not lo < mid < hi:
            break
        lo, hi = (mid, hi) if censored(mid) < target else (lo, mid)
    return (lo + hi) / 2.0


def censored_fraction(rate: float, event_time: np.ndarray) -> float:
    """Fraction of patients censored by exponential drop-out at ``rate`` before their event.

    Parameters
    ----------
    rate : drop-out rate, per unit of ``event_time``
    event_time : (n,) event times, positive

    Returns
    -------
    float
        The mean over patients of P(drop-out < event time) = 1 - exp(-rate * event_time).
    """
    return float(np.mean(1.0 - np.exp(-rate * event_time)))


def expected_censored_fraction(rate: float, hazard: np.ndarray, follow_up: float) -> float:
    """Expected fraction censored by exponential drop-out at ``rate`` or the end of follow-up.

    Each patient's event time is exponential with rate ``hazard``; the patient is censored at
    the drop-out or at ``follow_up``, whichever comes first, if that precedes the event:
    P(event) = hazard / (hazard + rate) * (1 - exp(-(hazard + rate) * follow_up)).

    Parameters
    ----------
    rate : drop-out rate, per unit of time
    hazard : (n,) event rates, positive, per the same unit
    follow_up : end of follow-up (``math.inf``: none)

    Returns
    -------
    float
        The mean over patients of P(censored).
    """
    total = hazard + rate
    return 1.0 - float(np.mean(hazard / total * -np.expm1(-total * follow_up)))
