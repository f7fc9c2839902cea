"""Kaplan-Meier curves, the log-rank test, survival at a time and median follow-up (lifelines).

Times are in the patient table's unit; ``event`` is 1 when the event was observed, 0 when
censored. The risk groups ("low", "high") are shown low first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import multivariate_logrank_test
from lifelines.utils import median_survival_times

from mil_crcrs.errors import InputError
from mil_crcrs.stats.covariates import RISK_GROUPS


@dataclass(frozen=True)
class KaplanMeier:
    """Kaplan-Meier curves of patient groups, compared by the log-rank test.

    Attributes
    ----------
    fitters : one fitted lifelines KaplanMeierFitter per group, in display order
    summary : one row per group: ``group, n, events, median, median_lower, median_upper``
        (medians in the table's time unit; NaN = not reached)
    at_risk : numbers at risk (time >= t), index ``time``, one column per group
    logrank_statistic, logrank_df, logrank_p : the log-rank test of equal curves
    """

    fitters: Mapping[str, KaplanMeierFitter]
    summary: pd.DataFrame
    at_risk: pd.DataFrame
    logrank_statistic: float
    logrank_df: int
    logrank_p: float


def kaplan_meier(
    time: np.ndarray,
    event: np.ndarray,
    group: np.ndarray,
    at_risk_times: Sequence[float] = (),
    order: Sequence[str] | None = None,
) -> KaplanMeier:
    """Kaplan-Meier estimate per group, median survival with 95% CI, numbers at risk, log-rank.

    Parameters
    ----------
    time : (n,) float follow-up times
    event : (n,) int, 1 = event observed, 0 = censored
    group : (n,) group labels (e.g. "high"/"low")
    at_risk_times : times at which to count the patients still at risk (time >= t)
    order : display order of the groups; default sorted, with "low" before "high"

    Returns
    -------
    KaplanMeier
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=np.int64)
    group = np.asarray(group).astype(str)
    labels = list(order) if order is not None else _group_order(np.unique(group))
    labels = [g for g in labels if (group == g).any()]
    if len(labels) < 2:
        raise InputError(
            f"a Kaplan-Meier comparison needs two groups, got only {', '.join(labels) or 'none'}"
        )
    fitters, rows = {}, []
    for g in labels:
        sel = group == g
        kmf = KaplanMeierFitter(label=g).fit(time[sel], event[sel])
        ci = median_survival_times(kmf.confidence_interval_)
        rows.append(
            {
                "group": g,
                "n": int(sel.sum()),
                "events": int(event[sel].sum()),
                "median": _finite(kmf.median_survival_time_),
                "median_lower": _finite(ci.iloc[0, 0]),
                "median_upper": _finite(ci.iloc[0, 1]),
            }
        )
        fitters[g] = kmf
    test = multivariate_logrank_test(time, group, event)
    ticks = np.asarray(list(at_risk_times), dtype=np.float64)
    at_risk = pd.DataFrame(
        {g: [int(((group == g) & (time >= t)).sum()) for t in ticks] for g in labels},
        index=pd.Index(ticks, name="time"),
    )
    return KaplanMeier(
        fitters=fitters,
        summary=pd.DataFrame(rows),
        at_risk=at_risk,
        logrank_statistic=float(test.test_statistic),
        logrank_df=len(labels) - 1,
        logrank_p=float(test.p_value),
    )


def survival_at(time: np.ndarray, event: np.ndarray, t: float) -> tuple[float, float, float]:
    """Kaplan-Meier survival at time ``t`` with its 95% log-log CI.

    scikit-survival's :func:`~sksurv.nonparametric.kaplan_meier_estimator` (the same numbers as
    lifelines' KaplanMeierFitter, at a fraction of the cost, for the many small groups of
    calibration and decision curves).
    """
    from sksurv.nonparametric import kaplan_meier_estimator

    times, surv, ci = kaplan_meier_estimator(
        np.asarray(event).astype(bool), np.asarray(time, np.float64), conf_type="log-log"
    )
    i = int(np.searchsorted(times, t, side="right")) - 1
    if i < 0:
        return 1.0, 1.0, 1.0
    return float(surv[i]), float(ci[0, i]), float(ci[1, i])


def median_follow_up(time: np.ndarray, event: np.ndarray) -> float:
    """Median follow-up by the reverse Kaplan-Meier method (censoring treated as the event)."""
    kmf = KaplanMeierFitter().fit(np.asarray(time, float), 1 - np.asarray(event, int))
    return _finite(kmf.median_survival_time_)


def _group_order(groups: Iterable[str]) -> list[str]:
    groups = sorted(groups)
    if set(groups) == set(RISK_GROUPS):
        return list(RISK_GROUPS)
    return groups


def _finite(x: float) -> float:
    x = float(x)
    return x if np.isfinite(x) else float("nan")
