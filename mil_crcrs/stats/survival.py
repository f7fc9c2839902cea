"""Kaplan-Meier curves, log-rank tests and Cox models of a patient table, on top of lifelines.

The patient table is a data frame with one row per patient, a ``time`` and an ``event`` column
(1 = event observed, 0 = censored) and the variables named by the caller: the CRCRS (``crcrs``,
continuous, log-hazard scale), its ``risk_group`` ("high"/"low") and clinical covariates.

Covariate encoding, stated once:

- A covariate is **categorical** when its values are not numbers (text, booleans), or when the
  caller names it in ``categorical`` (for numeric codes such as T stage 1-4). Everything else is
  **numeric** and enters the model linearly, its hazard ratio per unit.
- The **reference level** of a categorical covariate is its most frequent level (ties go to the
  first in sorted order), so that every other level is compared against a well-populated group;
  ``risk_group`` always has ``low`` as reference. Integral numeric codes are shown without a
  decimal point ("2", not "2.0").
- A patient with a missing value of a variable in a model is left out of that model (complete
  cases, as R's ``coxph`` does by default); ``n`` and ``events`` in every table say how many were
  used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import multivariate_logrank_test, proportional_hazard_test
from lifelines.utils import median_survival_times
from scipy import stats

from mil_crcrs.errors import InputError

RISK_GROUPS = ("low", "high")
MAX_LEVELS = 20
FEW_VALUES = 5  # a numeric covariate with at most this many values is split by value

COX_COLUMNS = [
    "model",
    "variable",
    "term",
    "level",
    "reference",
    "n",
    "events",
    "coef",
    "se",
    "hr",
    "hr_lower",
    "hr_upper",
    "p",
]


# ---------------------------------------------------------------------------------------------
# Covariate encoding
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """One model variable and its design columns.

    Attributes
    ----------
    name : the column of the patient table
    reference : the reference level of a categorical variable; None for a numeric one
    levels : the other levels of a categorical variable, each its own 0/1 design column
    """

    name: str
    reference: str | None = None
    levels: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.reference is not None

    @property
    def terms(self) -> tuple[str, ...]:
        """Names of the design columns: ``name`` or ``name=level`` per non-reference level."""
        if not self.categorical:
            return (self.name,)
        return tuple(f"{self.name}={level}" for level in self.levels)

    def encode(self, column: pd.Series, source: str) -> pd.DataFrame:
        """(n, len(terms)) float64 design columns; NaN where the value is missing."""
        if not self.categorical:
            values = pd.to_numeric(column, errors="coerce").astype(np.float64)
            return pd.DataFrame({self.name: values}, index=column.index)
        labels = as_levels(column)
        known = {self.reference, *self.levels}
        unseen = sorted(set(labels.dropna()) - known)
        if unseen:
            raise InputError(
                f"{source}: covariate '{self.name}' has level(s) {', '.join(map(repr, unseen))} "
                f"that the model was not fitted with (it knows {', '.join(sorted(known))})"
            )
        missing = labels.isna()
        out = {}
        for level, term in zip(self.levels, self.terms, strict=True):
            values = (labels == level).astype(np.float64)
            values[missing] = np.nan
            out[term] = values
        return pd.DataFrame(out, index=column.index)


@dataclass(frozen=True)
class Encoding:
    """How a list of variables becomes a Cox design matrix (see the module docstring)."""

    variables: tuple[Variable, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(t for v in self.variables for t in v.terms)

    def __getitem__(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    def subset(self, names: Iterable[str]) -> Encoding:
        return Encoding(tuple(self[n] for n in names))

    def transform(self, table: pd.DataFrame, source: str = "<table>") -> pd.DataFrame:
        """(n_patients, n_terms) float64 design matrix, NaN where a value is missing."""
        _require_columns(table, self.names, source)
        parts = [v.encode(table[v.name], source) for v in self.variables]
        return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=table.index)


def as_levels(column: pd.Series) -> pd.Series:
    """The values of a categorical column as strings (``2.0`` -> ``"2"``), NaN kept as NaN."""

    def label(value: object) -> object:
        if pd.isna(value):
            return np.nan
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return str(int(value))
        return str(value).strip()

    return column.map(label).astype(object)


def is_categorical(column: pd.Series) -> bool:
    """True when the column's values are not all numbers (after dropping missing values)."""
    values = column.dropna()
    if pd.api.types.is_bool_dtype(values):
        return True
    return bool(pd.to_numeric(values, errors="coerce").isna().any())


def make_encoding(
    table: pd.DataFrame,
    names: Sequence[str],
    categorical: Iterable[str] = (),
    source: str = "<table>",
) -> Encoding:
    """Decide how each variable enters a Cox model, from the (training) patient table.

    Parameters
    ----------
    table : patient table holding the columns ``names``
    names : variables in model order
    categorical : names to treat as categorical even though their values are numbers
    source : the table's origin, for messages

    Raises
    ------
    InputError
        when a column is missing, constant, entirely empty, or categorical with more than
        20 levels (most likely an id or a numeric column with stray text).
    """
    _require_columns(table, names, source)
    forced = set(categorical)
    variables = []
    for name in names:
        column = table[name]
        present = column.dropna()
        if present.empty:
            raise InputError(f"{source}: covariate '{name}' has no values")
        if name == "risk_group":
            variables.append(Variable(name, "low", ("high",)))
            levels = set(as_levels(present))
            if levels != set(RISK_GROUPS):
                raise InputError(
                    f"{source}: column 'risk_group' must hold both 'high' and 'low', "
                    f"got {', '.join(sorted(levels))}"
                )
            continue
        if name in forced or is_categorical(column):
            labels = as_levels(present)
            counts = labels.value_counts()
            if len(counts) > MAX_LEVELS:
                raise InputError(
                    f"{source}: covariate '{name}' has {len(counts)} distinct non-numeric values; "
                    f"a categorical covariate may have at most {MAX_LEVELS} levels"
                )
            if len(counts) < 2:
                raise InputError(
                    f"{source}: covariate '{name}' is constant (every patient has "
                    f"{labels.iloc[0]!r}); a constant cannot enter a Cox model"
                )
            # Most frequent level as reference; ties broken by sorted order.
            ordered = sorted(counts.index, key=lambda lv: (-counts[lv], lv))
            variables.append(Variable(name, ordered[0], tuple(sorted(ordered[1:]))))
        else:
            values = pd.to_numeric(present)
            if values.nunique() < 2:
                raise InputError(
                    f"{source}: covariate '{name}' is constant (every patient has "
                    f"{values.iloc[0]}); a constant cannot enter a Cox model"
                )
            variables.append(Variable(name))
    return Encoding(tuple(variables))


def _require_columns(table: pd.DataFrame, names: Iterable[str], source: str) -> None:
    missing = [n for n in names if n not in table.columns]
    if missing:
        have = [c for c in table.columns if c not in ("time", "event")]
        raise InputError(
            f"{source}: covariate(s) {', '.join(map(repr, missing))} not found "
            f"(the table has {', '.join(map(str, have))})"
        )


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier and log-rank
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Cox models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoxModel:
    """A Cox proportional-hazards model fitted with lifelines (Efron ties, as R's ``coxph``).

    Attributes
    ----------
    name : a label for tables and plots
    encoding : how the variables became design columns
    fitter : the fitted lifelines CoxPHFitter
    data : the complete-case design matrix it was fitted on, with ``time`` and ``event``
    """

    name: str
    encoding: Encoding
    fitter: CoxPHFitter
    data: pd.DataFrame

    @property
    def n(self) -> int:
        return len(self.data)

    @property
    def events(self) -> int:
        return int(self.data["event"].sum())

    def design(self, table: pd.DataFrame, source: str = "<table>") -> pd.DataFrame:
        """Complete-case design matrix of ``table`` (rows with a missing value dropped)."""
        return self.encoding.transform(table, source).dropna()

    def linear_predictor(self, design: pd.DataFrame) -> np.ndarray:
        """(n,) float64 uncentred linear predictor x'beta (higher = worse)."""
        beta = self.fitter.params_.reindex(list(self.encoding.terms)).to_numpy()
        return design[list(self.encoding.terms)].to_numpy(np.float64) @ beta

    def survival(self, design: pd.DataFrame, times: Sequence[float]) -> np.ndarray:
        """(n, len(times)) predicted survival S(t | x) from lifelines."""
        sf = self.fitter.predict_survival_function(design[list(self.encoding.terms)], times=times)
        return sf.to_numpy(np.float64).T

    def table(self) -> pd.DataFrame:
        """HR, 95% CI and Wald p per design column, in :data:`COX_COLUMNS` layout."""
        s = self.fitter.summary
        rows = []
        for v in self.encoding.variables:
            for term, level in zip(v.terms, v.levels or (None,), strict=True):
                r = s.loc[term]
                rows.append(
                    {
                        "model": self.name,
                        "variable": v.name,
                        "term": term,
                        "level": level,
                        "reference": v.reference,
                        "n": self.n,
                        "events": self.events,
                        "coef": r["coef"],
                        "se": r["se(coef)"],
                        "hr": r["exp(coef)"],
                        "hr_lower": r["exp(coef) lower 95%"],
                        "hr_upper": r["exp(coef) upper 95%"],
                        "p": r["p"],
                    }
                )
        return pd.DataFrame(rows, columns=COX_COLUMNS)


def fit_cox(
    table: pd.DataFrame,
    encoding: Encoding,
    name: str = "cox",
    source: str = "<table>",
) -> CoxModel:
    """Fit a Cox model of ``time``/``event`` on the encoded variables, complete cases only.

    Raises
    ------
    InputError
        when too few patients or no events remain, a design column is constant among the
        complete cases (a level nobody has), or the fit does not converge (collinear covariates).
    """
    design = encoding.transform(table, source)
    data = pd.concat([design, table[["time", "event"]]], axis=1).dropna()
    what = ", ".join(encoding.names)
    if data["event"].sum() < 1 or len(data) < len(encoding.terms) + 2:
        raise InputError(
            f"{source}: too few patients ({len(data)}) or events ({int(data['event'].sum())}) "
            f"with values of {what} to fit a Cox model"
        )
    for term in encoding.terms:
        if data[term].nunique() < 2:
            raise InputError(
                f"{source}: '{term}' is constant among the {len(data)} patients with values of "
                f"{what}; merge or drop that level"
            )
    fitter = CoxPHFitter()
    try:
        fitter.fit(data, duration_col="time", event_col="event")
    except ConvergenceError:
        raise InputError(
            f"{source}: the Cox model of {what} did not converge (collinear covariates, or a "
            "level with no events?)"
        ) from None
    return CoxModel(name=name, encoding=encoding, fitter=fitter, data=data)


def univariable_cox(
    table: pd.DataFrame, encoding: Encoding, source: str = "<table>"
) -> pd.DataFrame:
    """One Cox model per variable; rows as :meth:`CoxModel.table` plus ``p_overall``.

    ``p_overall`` is the likelihood-ratio test of the whole variable (all its levels at once),
    the same as the Wald ``p`` for a single design column up to the test used.
    """
    frames = []
    for v in encoding.variables:
        model = fit_cox(table, Encoding((v,)), name="univariable", source=source)
        t = model.table()
        t["p_overall"] = model.fitter.log_likelihood_ratio_test().p_value
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def proportional_hazards_test(model: CoxModel) -> pd.DataFrame:
    """Schoenfeld-residual test of proportional hazards per design column.

    lifelines' :func:`~lifelines.statistics.proportional_hazard_test` with the Kaplan-Meier
    time transform (the default of R's ``cox.zph``). Columns: ``model, term, statistic, p``.
    """
    result = proportional_hazard_test(model.fitter, model.data, time_transform="km")
    s = result.summary
    return pd.DataFrame(
        {
            "model": model.name,
            "term": [str(i if not isinstance(i, tuple) else i[-1]) for i in s.index],
            "statistic": s["test_statistic"].to_numpy(),
            "p": s["p"].to_numpy(),
        }
    )


def subgroup_hazard_ratios(
    table: pd.DataFrame,
    encoding: Encoding,
    term: str = "risk_group",
    min_events: int = 2,
    source: str = "<table>",
) -> pd.DataFrame:
    """Hazard ratio of ``term`` (high vs low risk group by default) within each subgroup.

    Subgroups are the levels of each categorical covariate, the values of a numeric covariate
    with at most 5 distinct values, and otherwise the two halves of a numeric covariate split
    at its median (``<= m`` and ``> m``). A stratum where a risk group is
    empty or has fewer than ``min_events`` events in total is reported with NaN estimates and a
    ``note``, never fitted. ``p_interaction`` is the likelihood-ratio test of the
    term-by-covariate interaction on the whole cohort.

    Returns
    -------
    DataFrame with ``covariate, subgroup, n, events, hr, hr_lower, hr_upper, p, p_interaction,
    note``.
    """
    inner = encoding[term]
    rows = []
    for v in encoding.variables:
        if v.name == term:
            continue
        column = table[v.name]
        values = pd.to_numeric(column, errors="coerce")
        if not v.categorical and values.nunique() <= FEW_VALUES:
            labels = as_levels(values)
            strata = [(level, labels == level) for level in sorted(labels.dropna().unique())]
        elif v.categorical:
            labels = as_levels(column)
            strata = [(level, labels == level) for level in sorted((v.reference, *v.levels))]
        else:
            m = float(values.median())
            shown = f"{m:g}"
            strata = [(f"<= {shown}", values <= m), (f"> {shown}", values > m)]
        p_int = _interaction_p(table, inner, v, source)
        for label, sel in strata:
            sub = table[sel.fillna(False).to_numpy(bool)]
            row = {
                "covariate": v.name,
                "subgroup": label,
                "n": len(sub),
                "events": int(sub["event"].sum()),
                "hr": np.nan,
                "hr_lower": np.nan,
                "hr_upper": np.nan,
                "p": np.nan,
                "p_interaction": p_int,
                "note": "",
            }
            groups = as_levels(sub[term]) if inner.categorical else None
            if groups is not None and groups.nunique() < 2:
                row["note"] = "one risk group only"
            elif row["events"] < min_events:
                row["note"] = f"fewer than {min_events} events"
            else:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model = fit_cox(sub, Encoding((inner,)), source=source)
                    r = model.table().iloc[0]
                    if not np.isfinite([r["hr"], r["hr_lower"], r["hr_upper"]]).all():
                        raise InputError("not finite")
                    row.update(hr=r["hr"], hr_lower=r["hr_lower"], hr_upper=r["hr_upper"], p=r["p"])
                except InputError:
                    row["note"] = "not estimable"
            rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "covariate",
            "subgroup",
            "n",
            "events",
            "hr",
            "hr_lower",
            "hr_upper",
            "p",
            "p_interaction",
            "note",
        ],
    )


def _interaction_p(table: pd.DataFrame, inner: Variable, other: Variable, source: str) -> float:
    """LRT p of inner-by-other interaction terms added to the main-effects Cox model."""
    design = Encoding((inner, other)).transform(table, source)
    data = pd.concat([design, table[["time", "event"]]], axis=1).dropna()
    products = {}
    for a in inner.terms:
        for b in other.terms:
            products[f"{a}:{b}"] = data[a] * data[b]
    full = pd.concat([data, pd.DataFrame(products, index=data.index)], axis=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ll0 = CoxPHFitter().fit(data, "time", "event").log_likelihood_
            ll1 = CoxPHFitter().fit(full, "time", "event").log_likelihood_
    except ConvergenceError:
        return float("nan")
    stat = max(2.0 * (ll1 - ll0), 0.0)
    return float(stats.chi2.sf(stat, df=len(products)))
