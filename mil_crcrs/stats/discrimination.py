"""How well risk scores separate patients: C-indices, time-dependent AUC, integrated Brier score.

Every metric is scikit-survival's; this module fixes the conventions and adds bootstrap CIs.

- Risk scores are "higher = worse". Harrell's C counts ties in risk as one half.
- The inverse-probability-of-censoring weights of Uno's C, the cumulative/dynamic AUC and the
  Brier score come from the censoring distribution of the **cohort being evaluated** (an
  external cohort has its own follow-up pattern, which the training cohort's would misstate).
- Uno's C is truncated at ``tau``, the largest horizon, where the censoring weights are stable.
- The integrated Brier score is taken over ``brier_grid``: 50 evenly spaced times from the 5th
  percentile of the observed times to the largest horizon. It needs predicted survival curves,
  so only models that give them (Cox models) have one.
- Bootstrap: patients are resampled with replacement ``n_bootstrap`` times; the models stay
  fixed and every metric is recomputed on each resample (paired across models, so differences
  get their own CI). The 95% CI is the 2.5th-97.5th percentile of the replicates where the
  metric is defined; ``n_bootstrap`` in the tables says how many that was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc, integrated_brier_score
from sksurv.util import Surv

from mil_crcrs.stats.metrics import harrell_c

__all__ = [
    "Discrimination",
    "brier_grid",
    "evaluate_discrimination",
    "integrated_brier",
    "time_dependent_auc",
    "uno_c",
]

METRIC_COLUMNS = ["model", "metric", "horizon", "estimate", "ci_lower", "ci_upper", "n_bootstrap"]
DIFF_COLUMNS = [
    "model",
    "reference",
    "metric",
    "horizon",
    "difference",
    "ci_lower",
    "ci_upper",
    "n_bootstrap",
]


def _surv(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    return Surv.from_arrays(np.asarray(event).astype(bool), np.asarray(time, dtype=np.float64))


def uno_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray, tau: float) -> float:
    """Uno's IPCW C-index truncated at ``tau``, censoring weights from this cohort.

    Parameters
    ----------
    time, event, risk : (n,) follow-up, 1 = event, risk score (higher = worse)
    tau : only pairs whose earlier time is below ``tau`` count
    """
    y = _surv(time, event)
    return float(concordance_index_ipcw(y, y, np.asarray(risk, np.float64), tau=tau)[0])


def time_dependent_auc(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, times: Sequence[float]
) -> np.ndarray:
    """(len(times),) cumulative/dynamic AUC of ``risk`` at each time (scikit-survival).

    Cases are patients with an event by ``t``, controls those still event-free after ``t``;
    censoring weights from this cohort. Every time must lie in [min(time), max(time)).
    """
    y = _surv(time, event)
    auc, _ = cumulative_dynamic_auc(y, y, np.asarray(risk, np.float64), np.asarray(times, float))
    return np.asarray(auc, dtype=np.float64)


def integrated_brier(
    time: np.ndarray, event: np.ndarray, survival: np.ndarray, times: Sequence[float]
) -> float:
    """Integrated Brier score of predicted survival curves over ``times`` (lower = better).

    Parameters
    ----------
    survival : (n, len(times)) predicted S(t | x) of each patient at each time
    """
    y = _surv(time, event)
    return float(
        integrated_brier_score(y, y, np.asarray(survival, float), np.asarray(times, float))
    )


def brier_grid(time: np.ndarray, tau: float, n: int = 50) -> np.ndarray:
    """(n,) evenly spaced times from the 5th percentile of ``time`` to ``tau``."""
    lo = float(np.percentile(np.asarray(time, float), 5))
    return np.linspace(lo, tau, n)


@dataclass(frozen=True)
class Discrimination:
    """Discrimination of several models on one cohort.

    Attributes
    ----------
    metrics : one row per model and metric (``harrell_c``, ``uno_c``, ``auc`` per horizon,
        ``ibs``), columns :data:`METRIC_COLUMNS`; ``horizon`` is NaN for whole-curve metrics
    differences : model minus reference, per metric, with paired-bootstrap CIs
    auc_curve : ``model, time, auc``: AUC(t) on a grid of times, for plotting
    """

    metrics: pd.DataFrame
    differences: pd.DataFrame
    auc_curve: pd.DataFrame


def _all_metrics(
    time: np.ndarray,
    event: np.ndarray,
    risk: Mapping[str, np.ndarray],
    survival: Mapping[str, np.ndarray],
    horizons: np.ndarray,
    grid: np.ndarray,
) -> dict[tuple[str, str, float | None], float]:
    """Every metric of every model; NaN where a metric is undefined on this sample."""
    out: dict[tuple[str, str, float | None], float] = {}
    tau = float(horizons.max())
    nan = float("nan")
    whole = None  # the horizon of a whole-curve metric (NaN in the tables)
    for model, r in risk.items():
        out[(model, "harrell_c", whole)] = harrell_c(time, event, r)
        try:
            out[(model, "uno_c", whole)] = uno_c(time, event, r, tau)
        except ValueError:
            out[(model, "uno_c", whole)] = nan
        try:
            aucs = time_dependent_auc(time, event, r, horizons)
        except ValueError:
            aucs = np.array([_auc_or_nan(time, event, r, h) for h in horizons])
        for h, a in zip(horizons, aucs, strict=True):
            out[(model, "auc", float(h))] = float(a)
        if model in survival:
            try:
                out[(model, "ibs", whole)] = integrated_brier(time, event, survival[model], grid)
            except ValueError:
                out[(model, "ibs", whole)] = nan
    return out


def _auc_or_nan(time: np.ndarray, event: np.ndarray, risk: np.ndarray, h: float) -> float:
    try:
        return float(time_dependent_auc(time, event, risk, [h])[0])
    except ValueError:
        return float("nan")


def _ci(values: np.ndarray) -> tuple[float, float, int]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), 0
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi), int(values.size)


def evaluate_discrimination(
    time: np.ndarray,
    event: np.ndarray,
    risk: Mapping[str, np.ndarray],
    horizons: Sequence[float],
    survival: Mapping[str, np.ndarray] | None = None,
    grid: np.ndarray | None = None,
    comparisons: Sequence[tuple[str, str]] = (),
    n_bootstrap: int = 200,
    seed: int = 0,
) -> Discrimination:
    """Harrell's and Uno's C, AUC at each horizon and the integrated Brier score, with CIs.

    Parameters
    ----------
    time, event : (n,) follow-up in the cohort's time unit, 1 = event observed
    risk : model name -> (n,) risk score, higher = worse
    horizons : times (same unit) for the time-dependent AUC; the largest is Uno's ``tau``
    survival : model name -> (n, len(grid)) predicted S(t) on ``grid``, for the Brier score
    grid : times of ``survival`` (see :func:`brier_grid`); required with ``survival``
    comparisons : (model, reference) pairs whose metric difference gets a bootstrap CI, e.g.
        ``[("crcrs+clinical", "clinical")]``
    n_bootstrap : bootstrap resamples (0 = point estimates only)
    seed : seed of the resampling

    Returns
    -------
    Discrimination
    """
    time = np.asarray(time, np.float64)
    event = np.asarray(event, np.int64)
    horizons = np.asarray(sorted(horizons), np.float64)
    survival = dict(survival or {})
    if survival and grid is None:
        raise ValueError("grid is required with survival")
    grid = np.asarray(grid if grid is not None else [], np.float64)
    point = _all_metrics(time, event, risk, survival, horizons, grid)
    keys = list(point)

    def on_resample(idx: np.ndarray) -> dict[tuple[str, str, float | None], float]:
        risk_b = {m: r[idx] for m, r in risk.items()}
        survival_b = {m: s[idx] for m, s in survival.items()}
        return _all_metrics(time[idx], event[idx], risk_b, survival_b, horizons, grid)

    boot = _bootstrap(on_resample, len(time), keys, n_bootstrap, seed)

    rows = []
    for j, (model, metric, h) in enumerate(keys):
        lo, hi, nb = _ci(boot[:, j])
        shown = np.nan if h is None else h
        rows.append([model, metric, shown, point[(model, metric, h)], lo, hi, nb])
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    return Discrimination(
        metrics=metrics,
        differences=_differences(point, boot, keys, comparisons),
        auc_curve=_auc_curve(time, event, risk, horizons, grid),
    )


def _bootstrap(
    metrics_of: Callable[[np.ndarray], Mapping[tuple[str, str, float | None], float]],
    n_patients: int,
    keys: list[tuple[str, str, float | None]],
    n_bootstrap: int,
    seed: int,
) -> np.ndarray:
    """(n_bootstrap, len(keys)) every metric on each resample of patients (``metrics_of`` takes
    the resampled indices; the models stay fixed)."""
    rng = np.random.default_rng(seed)
    boot = np.full((n_bootstrap, len(keys)), np.nan)
    for b in range(n_bootstrap):
        rep = metrics_of(rng.integers(0, n_patients, n_patients))
        boot[b] = [rep[k] for k in keys]
    return boot


def _differences(
    point: Mapping[tuple[str, str, float | None], float],
    boot: np.ndarray,
    keys: list[tuple[str, str, float | None]],
    comparisons: Sequence[tuple[str, str]],
) -> pd.DataFrame:
    """Model minus reference per metric, with the CI of the paired bootstrap differences."""
    diff_rows = []
    for model, ref in comparisons:
        for j, (m, metric, h) in enumerate(keys):
            if m != model or (ref, metric, h) not in point:
                continue
            k = keys.index((ref, metric, h))
            lo, hi, nb = _ci(boot[:, j] - boot[:, k])
            diff = point[(m, metric, h)] - point[(ref, metric, h)]
            diff_rows.append([model, ref, metric, np.nan if h is None else h, diff, lo, hi, nb])
    return pd.DataFrame(diff_rows, columns=DIFF_COLUMNS)


def _auc_curve(
    time: np.ndarray,
    event: np.ndarray,
    risk: Mapping[str, np.ndarray],
    horizons: np.ndarray,
    grid: np.ndarray,
) -> pd.DataFrame:
    """``model, time, auc`` on 40 times up to the largest horizon, within the follow-up."""
    curve_times = np.linspace(grid[0] if grid.size else horizons.min(), horizons.max(), 40)
    curve_times = curve_times[(curve_times >= time.min()) & (curve_times < time.max())]
    curve = []
    for model, r in risk.items():
        try:
            aucs = time_dependent_auc(time, event, r, curve_times)
        except ValueError:
            continue
        curve += [[model, t, a] for t, a in zip(np.unique(curve_times), aucs, strict=True)]
    return pd.DataFrame(curve, columns=["model", "time", "auc"])
