"""Cox proportional-hazards models of a patient table (lifelines), their tables and checks.

Variables enter through a :class:`~mil_crcrs.stats.covariates.Encoding` (see
:mod:`mil_crcrs.stats.covariates` for the coding, reference levels and complete cases). Every
table of hazard ratios has the :data:`COX_COLUMNS` layout; :func:`subgroup_hazard_ratios` gives
the hazard ratio of the risk group within the subgroups of each covariate.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import proportional_hazard_test
from scipy import stats

from mil_crcrs.errors import InputError
from mil_crcrs.stats.covariates import Encoding, Variable, as_levels

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
SUBGROUP_COLUMNS = [
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
]


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
        strata = _strata(table[v.name], v)
        p_int = _interaction_p(table, inner, v, source)
        for label, sel in strata:
            sub = table[sel.fillna(False).to_numpy(bool)]
            row = {
                "covariate": v.name,
                "subgroup": label,
                "n": len(sub),
                "events": int(sub["event"].sum()),
                "p_interaction": p_int,
            }
            rows.append({**row, **_stratum_estimate(sub, inner, min_events, source)})
    return pd.DataFrame(rows, columns=SUBGROUP_COLUMNS)


def _strata(column: pd.Series, variable: Variable) -> list[tuple[str, pd.Series]]:
    """(label, boolean selection) per subgroup of one covariate (see
    :func:`subgroup_hazard_ratios`)."""
    values = pd.to_numeric(column, errors="coerce")
    if not variable.categorical and values.nunique() <= FEW_VALUES:
        labels = as_levels(values)
        return [(level, labels == level) for level in sorted(labels.dropna().unique())]
    if variable.categorical:
        labels = as_levels(column)
        levels = (variable.reference, *variable.levels)
        return [(level, labels == level) for level in sorted(levels)]
    m = float(values.median())
    shown = f"{m:g}"
    return [(f"<= {shown}", values <= m), (f"> {shown}", values > m)]


def _stratum_estimate(
    sub: pd.DataFrame, inner: Variable, min_events: int, source: str
) -> dict[str, float | str]:
    """``hr, hr_lower, hr_upper, p, note`` of ``inner`` within one stratum; NaN and a note when
    it is not estimated."""
    none: dict[str, float | str] = {
        "hr": np.nan,
        "hr_lower": np.nan,
        "hr_upper": np.nan,
        "p": np.nan,
        "note": "",
    }
    groups = as_levels(sub[inner.name]) if inner.categorical else None
    if groups is not None and groups.nunique() < 2:
        return {**none, "note": "one risk group only"}
    if int(sub["event"].sum()) < min_events:
        return {**none, "note": f"fewer than {min_events} events"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fit_cox(sub, Encoding((inner,)), source=source)
    except InputError:
        return {**none, "note": "not estimable"}
    r = model.table().iloc[0]
    if not np.isfinite([r["hr"], r["hr_lower"], r["hr_upper"]]).all():
        return {**none, "note": "not estimable"}
    return {
        **none,
        "hr": r["hr"],
        "hr_lower": r["hr_lower"],
        "hr_upper": r["hr_upper"],
        "p": r["p"],
    }


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
