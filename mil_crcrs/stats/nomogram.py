"""A Cox nomogram of CRCRS + clinical covariates, its calibration and decision curves.

The nomogram is a drawing of a fitted Cox model (:class:`~mil_crcrs.stats.cox.CoxModel`), in the
convention of R's ``rms::nomogram``:

- each variable's contribution ``beta * x`` is shifted so that its smallest value over the
  training range is 0 points; the variable whose contribution spans the widest range gets
  0-100 points and every other variable is on the same scale;
- the total points map back to the linear predictor, and through lifelines' baseline
  cumulative hazard to the predicted survival ``S(t | x)`` at each horizon, exactly what
  ``CoxPHFitter.predict_survival_function`` gives.

A numeric variable's axis has round ticks within its training range, or its values when it
has at most five (0/1 codes, say).

Calibration groups patients by quantiles of predicted survival at a horizon and compares the
mean prediction with the Kaplan-Meier survival of the group. Decision curves follow Vickers et
al. (Med Decis Making 2008) for a time-to-event outcome: among the patients whose predicted
risk ``1 - S(h)`` reaches a threshold, the true- and false-positive fractions come from their
Kaplan-Meier survival at ``h``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines.utils import interpolate_at_times

from mil_crcrs.stats.cox import CoxModel
from mil_crcrs.stats.survival import survival_at


@dataclass(frozen=True)
class PointsScale:
    """One variable's points axis: the values shown and their points.

    For a numeric variable, ``values`` are evenly spaced ticks over the training range; for a
    categorical one, the reference level then the other levels.
    """

    variable: str
    values: tuple[str | float, ...]
    points: tuple[float, ...]


@dataclass(frozen=True)
class Nomogram:
    """Points scales of a Cox model, and the map from total points to predicted survival.

    Attributes
    ----------
    model : the fitted Cox model
    scales : one points axis per variable, in model order
    points_per_unit : points per unit of the linear predictor
    lp_at_zero : the uncentred linear predictor of a patient with 0 total points
    centre : the linear predictor lifelines centres on (x at the training means)
    horizons : times (the cohort's unit) of the survival axes
    baseline_hazard : (len(horizons),) lifelines' baseline cumulative hazard at the horizons
    """

    model: CoxModel
    scales: tuple[PointsScale, ...]
    points_per_unit: float
    lp_at_zero: float
    centre: float
    horizons: tuple[float, ...]
    baseline_hazard: tuple[float, ...]

    @property
    def max_total_points(self) -> float:
        return float(sum(max(s.points) for s in self.scales))

    def total_points(self, design: pd.DataFrame) -> np.ndarray:
        """(n,) total points of each patient of a design matrix (see :meth:`CoxModel.design`)."""
        lp = self.model.linear_predictor(design)
        return (lp - self.lp_at_zero) * self.points_per_unit

    def survival_from_points(self, points: np.ndarray, horizon_index: int) -> np.ndarray:
        """Predicted survival at ``horizons[horizon_index]`` for the given total points."""
        lp = np.asarray(points, float) / self.points_per_unit + self.lp_at_zero
        h0 = self.baseline_hazard[horizon_index]
        return np.exp(-h0 * np.exp(lp - self.centre))

    def points_table(self) -> pd.DataFrame:
        """``variable, value, points``: every tick of every points axis."""
        rows = [
            {"variable": s.variable, "value": str(v), "points": p}
            for s in self.scales
            for v, p in zip(s.values, s.points, strict=True)
        ]
        return pd.DataFrame(rows)

    def survival_table(self, n: int = 11) -> pd.DataFrame:
        """``total_points, horizon, survival`` on ``n`` evenly spaced totals, per horizon."""
        totals = np.linspace(0.0, self.max_total_points, n)
        rows = [
            {"total_points": t, "horizon": h, "survival": s}
            for i, h in enumerate(self.horizons)
            for t, s in zip(totals, self.survival_from_points(totals, i), strict=True)
        ]
        return pd.DataFrame(rows)


def build_nomogram(model: CoxModel, horizons: Sequence[float], n_ticks: int = 7) -> Nomogram:
    """The nomogram of a fitted Cox model, with survival axes at ``horizons``.

    Parameters
    ----------
    model : Cox model fitted on the training cohort
    horizons : times in the cohort's unit
    n_ticks : ticks on a numeric variable's axis
    """
    beta = model.fitter.params_
    data = model.data
    spans = []  # (variable, values, contributions)
    for v in model.encoding.variables:
        if v.categorical:
            values = (v.reference, *v.levels)
            contrib = np.array([0.0, *(beta[t] for t in v.terms)])
        else:
            observed = np.unique(data[v.name].to_numpy(float))
            if observed.size <= 5:
                values = tuple(float(x) for x in observed)
            else:
                values = tuple(float(x) for x in pretty_ticks(observed[0], observed[-1], n_ticks))
            contrib = beta[v.name] * np.array(values)
        spans.append((v.name, values, contrib))
    widest = max(float(c.max() - c.min()) for _, _, c in spans)
    per_unit = 100.0 / widest if widest > 0 else 1.0
    scales = tuple(
        PointsScale(name, tuple(values), tuple(float(x) for x in (c - c.min()) * per_unit))
        for name, values, c in spans
    )
    lp_at_zero = float(sum(c.min() for _, _, c in spans))
    design = data[list(model.encoding.terms)]
    centred = model.fitter.predict_log_partial_hazard(design).to_numpy()
    centre = float(np.mean(model.linear_predictor(design) - centred))
    hazard = interpolate_at_times(model.fitter.baseline_cumulative_hazard_, np.asarray(horizons))
    return Nomogram(
        model=model,
        scales=scales,
        points_per_unit=per_unit,
        lp_at_zero=lp_at_zero,
        centre=centre,
        horizons=tuple(float(h) for h in horizons),
        baseline_hazard=tuple(float(x) for x in np.atleast_1d(hazard)),
    )


def pretty_ticks(lo: float, hi: float, n: int = 6) -> np.ndarray:
    """At most ``n + 1`` round numbers (1, 2, 2.5 or 5 times a power of ten apart) in [lo, hi]."""
    if hi <= lo:
        return np.array([lo])
    power = 10.0 ** np.floor(np.log10((hi - lo) / max(n - 1, 1)))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0, 20.0):
        step = m * power
        ticks = np.arange(np.ceil(lo / step) * step, hi + step * 1e-9, step)
        if len(ticks) <= n + 1:
            break
    return np.round(ticks, 10)


def calibration(
    predicted: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    horizon: float,
    n_groups: int = 5,
) -> pd.DataFrame:
    """Predicted vs observed survival at ``horizon`` by quantile group of the prediction.

    Parameters
    ----------
    predicted : (n,) predicted survival S(horizon | x)
    time, event : (n,) follow-up and 1 = event observed
    horizon : time in the cohort's unit
    n_groups : number of quantile groups; fewer when that would leave under 10 patients a group

    Returns
    -------
    DataFrame with ``group, n, events, predicted, observed, observed_lower, observed_upper``
    (observed = Kaplan-Meier survival at ``horizon`` with its 95% CI).
    """
    predicted = np.asarray(predicted, float)
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    k = max(2, min(n_groups, len(predicted) // 10))
    groups = pd.qcut(pd.Series(predicted).rank(method="first"), k, labels=False).to_numpy()
    rows = []
    for g in range(k):
        sel = groups == g
        s, lo, hi = survival_at(time[sel], event[sel], horizon)
        rows.append(
            {
                "group": g + 1,
                "n": int(sel.sum()),
                "events": int(event[sel].sum()),
                "predicted": float(predicted[sel].mean()),
                "observed": s,
                "observed_lower": lo,
                "observed_upper": hi,
            }
        )
    return pd.DataFrame(rows)


def net_benefit(
    risk: np.ndarray | None,
    time: np.ndarray,
    event: np.ndarray,
    horizon: float,
    thresholds: np.ndarray,
) -> np.ndarray:
    """(len(thresholds),) net benefit of treating patients whose risk by ``horizon`` >= pt.

    Parameters
    ----------
    risk : (n,) predicted probability of the event by ``horizon`` (1 - S(horizon)); None means
        "treat all"
    time, event : (n,) follow-up and 1 = event observed
    thresholds : threshold probabilities pt in (0, 1)

    Notes
    -----
    ``NB(pt) = TP/n - FP/n * pt / (1 - pt)`` with ``TP/n = (1 - S_KM(h | treated)) * P(treated)``
    and ``FP/n = S_KM(h | treated) * P(treated)``. Without censoring before ``h`` this is the
    ordinary binary net benefit. Nobody treated gives 0.
    """
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    out = np.zeros(len(thresholds))
    surv_of_treated: dict[int, float] = {}  # the treated set is fixed by its size
    for i, pt in enumerate(np.asarray(thresholds, float)):
        treated = np.ones(len(time), bool) if risk is None else np.asarray(risk) >= pt
        k = int(treated.sum())
        if k == 0:
            continue
        if k not in surv_of_treated:
            surv_of_treated[k] = survival_at(time[treated], event[treated], horizon)[0]
        s = surv_of_treated[k]
        frac = k / len(time)
        out[i] = (1 - s) * frac - s * frac * pt / (1 - pt)
    return out


def decision_curve(
    risks: dict[str, np.ndarray],
    time: np.ndarray,
    event: np.ndarray,
    horizon: float,
    thresholds: np.ndarray | None = None,
) -> pd.DataFrame:
    """Net benefit of each model, of treating all and of treating none, at ``horizon``.

    Parameters
    ----------
    risks : model name -> (n,) predicted probability of the event by ``horizon``
    thresholds : default 0.01 to 0.99 by 0.01

    Returns
    -------
    DataFrame with ``model, threshold, net_benefit`` (models plus "treat all" and "treat none").
    """
    if thresholds is None:
        thresholds = np.round(np.arange(0.01, 1.0, 0.01), 2)
    frames = []
    for name, risk in [*risks.items(), ("treat all", None)]:
        nb = net_benefit(risk, time, event, horizon, thresholds)
        frames.append(pd.DataFrame({"model": name, "threshold": thresholds, "net_benefit": nb}))
    frames.append(
        pd.DataFrame({"model": "treat none", "threshold": thresholds, "net_benefit": 0.0})
    )
    return pd.concat(frames, ignore_index=True)
