"""Kaplan-Meier, log-rank, Cox models and subgroups against lifelines on R's colon trial data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test, proportional_hazard_test

from mil_crcrs.errors import InputError
from mil_crcrs.stats.covariates import Encoding, Variable, make_encoding
from mil_crcrs.stats.cox import (
    fit_cox,
    proportional_hazards_test,
    subgroup_hazard_ratios,
    univariable_cox,
)
from mil_crcrs.stats.survival import kaplan_meier, median_follow_up, survival_at
from tests.helpers import colon_raw


def colon_deaths() -> pd.DataFrame:
    """R's survival::colon, death outcome, one row per patient (929), from oncodatasets.

    The package ships the wide layout (``Stime``/``event`` = time to death or censoring, in
    days). It is GPL-3 and used only at test time, read in place. The stand-in score is a fixed
    linear combination of node4, extent, obstruct and adhere (higher = worse).
    """
    raw = colon_raw()
    table = pd.DataFrame(
        {
            "time": raw["Stime"].astype(float),
            "event": raw["event"].astype(int),
            "rx": raw["rx"],
            "sex": raw["sex"],
            "age": raw["age"].astype(float),
            "nodes": raw["nodes"],
            "extent": raw["extent"],
        }
    )
    table.index = pd.Index([f"c{i + 1}" for i in range(len(raw))], name="patient_id")
    table["crcrs"] = (
        0.5 * raw["node4"] + 0.4 * raw["extent"] + 0.3 * raw["obstruct"] + 0.3 * raw["adhere"]
    ).to_numpy()
    table["risk_group"] = np.where(table["crcrs"] > table["crcrs"].median(), "high", "low")
    return table


@pytest.fixture(scope="module")
def colon() -> pd.DataFrame:
    return colon_deaths()


# --- Kaplan-Meier and log-rank ---------------------------------------------------------------


def test_kaplan_meier_matches_lifelines(colon):
    ticks = [0.0, 365.25, 1826.25]
    km = kaplan_meier(colon["time"], colon["event"], colon["risk_group"], ticks)
    assert list(km.fitters) == ["low", "high"]
    high, low = colon[colon["risk_group"] == "high"], colon[colon["risk_group"] == "low"]
    # lifelines.statistics.logrank_test(T_high, T_low, E_high, E_low)
    direct = logrank_test(high["time"], low["time"], high["event"], low["event"])
    assert km.logrank_p == pytest.approx(direct.p_value, rel=1e-10)
    assert km.logrank_statistic == pytest.approx(direct.test_statistic, rel=1e-10)
    assert km.logrank_p < 1e-6  # node4 and extent are strong prognostic factors
    summary = km.summary.set_index("group")
    for name, group in (("high", high), ("low", low)):
        kmf = KaplanMeierFitter().fit(group["time"], group["event"])
        assert summary.loc[name, "n"] == len(group)
        assert summary.loc[name, "events"] == group["event"].sum()
        median = kmf.median_survival_time_
        shown = summary.loc[name, "median"]
        assert (np.isnan(shown) and np.isinf(median)) or shown == pytest.approx(median)
        np.testing.assert_allclose(
            km.fitters[name].survival_function_at_times([365.25, 1095.75]),
            kmf.survival_function_at_times([365.25, 1095.75]),
        )
    # the high-risk group has a reached median, below the low group's (or not reached)
    assert summary.loc["high", "median"] < 2000


def test_numbers_at_risk_are_patients_still_followed(colon):
    km = kaplan_meier(colon["time"], colon["event"], colon["risk_group"], [0.0, 23.0, 1000.0])
    assert km.at_risk.loc[0.0].sum() == len(colon)
    high = colon[colon["risk_group"] == "high"]
    kmf = KaplanMeierFitter().fit(high["time"], high["event"])
    # at an observed time, lifelines' event_table counts the same patients at risk (time >= t)
    t = float(high["time"].sort_values().iloc[50])
    km = kaplan_meier(colon["time"], colon["event"], colon["risk_group"], [t])
    assert km.at_risk.loc[t, "high"] == kmf.event_table.loc[t, "at_risk"]


def test_median_not_reached_is_nan():
    time = np.array([1, 2, 3, 4, 5, 6, 7, 8.0])
    event = np.array([1, 0, 0, 0, 1, 1, 1, 1])
    group = np.array(["low"] * 4 + ["high"] * 4)
    km = kaplan_meier(time, event, group)
    summary = km.summary.set_index("group")
    assert np.isnan(summary.loc["low", "median"])  # S stays at 0.75
    assert summary.loc["high", "median"] == 6.0  # 4 events among 4: S drops below 0.5 at 6


def test_one_group_is_an_input_error():
    with pytest.raises(InputError, match="two groups"):
        kaplan_meier([1.0, 2.0], [1, 1], ["high", "high"])


def test_survival_at_matches_lifelines_with_ci(colon):
    kmf = KaplanMeierFitter().fit(colon["time"], colon["event"])
    s, lo, hi = survival_at(colon["time"], colon["event"], 1095.75)
    assert s == pytest.approx(float(kmf.survival_function_at_times([1095.75]).iloc[0]))
    ci = kmf.confidence_interval_survival_function_
    row = ci[ci.index <= 1095.75].iloc[-1]
    assert (lo, hi) == pytest.approx((row.iloc[0], row.iloc[1]), rel=1e-8)
    assert survival_at(colon["time"], colon["event"], 0.0) == (1.0, 1.0, 1.0)


def test_median_follow_up_is_reverse_kaplan_meier(colon):
    kmf = KaplanMeierFitter().fit(colon["time"], 1 - colon["event"])
    assert median_follow_up(colon["time"], colon["event"]) == kmf.median_survival_time_


# --- Covariate encoding ------------------------------------------------------------------------


def test_reference_is_most_frequent_level(colon):
    enc = make_encoding(colon, ["rx", "risk_group", "extent", "age"], categorical=["extent"])
    rx = enc["rx"]
    assert rx.reference == "Obs"  # 315 Obs vs 310 Lev vs 304 Lev+5FU
    assert rx.levels == ("Lev", "Lev+5FU")
    assert enc["risk_group"].reference == "low"
    assert enc["extent"].reference == "3" and enc["extent"].levels == ("1", "2", "4")
    assert not enc["age"].categorical
    assert enc.terms == (
        "rx=Lev",
        "rx=Lev+5FU",
        "risk_group=high",
        "extent=1",
        "extent=2",
        "extent=4",
        "age",
    )


def test_reference_tie_goes_to_first_sorted():
    table = pd.DataFrame({"T": ["b", "a", "b", "a", "c"]})
    assert make_encoding(table, ["T"]).variables[0].reference == "a"


def test_design_matrix_keeps_missing_values_missing():
    var = Variable("T", reference="T1", levels=("T2", "T3"))
    design = Encoding((var,)).transform(pd.DataFrame({"T": ["T1", "T3", None]}))
    assert design.columns.tolist() == ["T=T2", "T=T3"]
    np.testing.assert_array_equal(design.iloc[0], [0, 0])
    np.testing.assert_array_equal(design.iloc[1], [0, 1])
    assert design.iloc[2].isna().all()


@pytest.mark.parametrize(
    ("table", "names", "message"),
    [
        (pd.DataFrame({"a": [1, 2]}), ["stage"], "covariate\\(s\\) 'stage' not found"),
        (pd.DataFrame({"a": [3, 3, 3]}), ["a"], "'a' is constant"),
        (pd.DataFrame({"a": ["x", "x", None]}), ["a"], "'a' is constant"),
        (pd.DataFrame({"a": [None, None]}), ["a"], "'a' has no values"),
        (pd.DataFrame({"a": [f"id{i}" for i in range(30)]}), ["a"], "30 distinct"),
    ],
)
def test_bad_covariates_are_input_errors(table, names, message):
    with pytest.raises(InputError, match=message):
        make_encoding(table, names, source="clin.csv")


def test_unseen_level_is_an_input_error():
    enc = make_encoding(pd.DataFrame({"M": ["M0", "M1", "M0"]}), ["M"])
    with pytest.raises(InputError, match="'M2'"):
        enc.transform(pd.DataFrame({"M": ["M2"]}), "valid.csv")


# --- Cox models --------------------------------------------------------------------------------


def test_univariable_cox_of_treatment_matches_lifelines(colon):
    enc = make_encoding(colon, ["rx"])
    table = univariable_cox(colon, enc).set_index("term")
    direct = pd.DataFrame(
        {
            "time": colon["time"],
            "event": colon["event"],
            "rx=Lev": (colon["rx"] == "Lev").astype(float),
            "rx=Lev+5FU": (colon["rx"] == "Lev+5FU").astype(float),
        }
    )
    # CoxPHFitter().fit(direct, "time", "event").summary
    s = CoxPHFitter().fit(direct, "time", "event").summary
    for term in ("rx=Lev", "rx=Lev+5FU"):
        assert table.loc[term, "hr"] == pytest.approx(s.loc[term, "exp(coef)"], rel=1e-6)
        assert table.loc[term, "hr_lower"] == pytest.approx(
            s.loc[term, "exp(coef) lower 95%"], rel=1e-6
        )
        assert table.loc[term, "hr_upper"] == pytest.approx(
            s.loc[term, "exp(coef) upper 95%"], rel=1e-6
        )
        assert table.loc[term, "p"] == pytest.approx(s.loc[term, "p"], rel=1e-5)
    assert table.loc["rx=Lev+5FU", "reference"] == "Obs"
    assert table.loc["rx=Lev+5FU", "n"] == 929 and table.loc["rx=Lev+5FU", "events"] == 452
    # Levamisole + 5-FU lowers the hazard of death by about a third; levamisole alone does not.
    assert 0.6 < table.loc["rx=Lev+5FU", "hr"] < 0.8 and table.loc["rx=Lev+5FU", "p"] < 0.01
    assert table.loc["rx=Lev", "p"] > 0.5


def test_multivariable_cox_uses_complete_cases_and_matches_lifelines(colon):
    names = ["crcrs", "rx", "age", "sex", "nodes"]
    enc = make_encoding(colon, names)
    model = fit_cox(colon, enc, name="multi")
    assert model.n == colon["nodes"].notna().sum() == 911  # 18 patients lack nodes
    direct = enc.transform(colon).assign(time=colon["time"], event=colon["event"]).dropna()
    s = CoxPHFitter().fit(direct, "time", "event").summary
    table = model.table().set_index("term")
    np.testing.assert_allclose(table["hr"], s.loc[table.index, "exp(coef)"], rtol=1e-6)
    np.testing.assert_allclose(table["p"], s.loc[table.index, "p"], rtol=1e-4)
    assert set(table["model"]) == {"multi"}


def test_linear_predictor_and_survival_agree_with_lifelines(colon):
    enc = make_encoding(colon, ["crcrs", "rx"])
    model = fit_cox(colon, enc)
    design = model.design(colon.iloc[:20])
    lp = model.linear_predictor(design)
    centred = model.fitter.predict_log_partial_hazard(design).to_numpy()
    np.testing.assert_allclose(lp - centred, (lp - centred)[0])  # same centring constant
    surv = model.survival(design, [365.25, 1095.75])
    expected = model.fitter.predict_survival_function(design, times=[365.25, 1095.75]).T
    np.testing.assert_allclose(surv, expected.to_numpy())


def test_proportional_hazards_test_matches_lifelines(colon):
    enc = make_encoding(colon, ["crcrs", "rx", "age"])
    model = fit_cox(colon, enc)
    ours = proportional_hazards_test(model).set_index("term")
    # proportional_hazard_test(fitter, data, time_transform="km")
    direct = proportional_hazard_test(model.fitter, model.data, time_transform="km").summary
    np.testing.assert_allclose(ours.loc[direct.index, "p"], direct["p"])
    assert set(ours.index) == set(enc.terms)


def test_level_absent_among_complete_cases_is_an_input_error():
    table = pd.DataFrame(
        {
            "time": [1.0, 2, 3, 4, 5, 6],
            "event": [1, 0, 1, 1, 0, 1],
            "M": ["M0", "M0", "M1", "M0", "M1", "M0"],
            "age": [50, 60, np.nan, 70, np.nan, 65],
        }
    )
    enc = make_encoding(table, ["M", "age"])
    with pytest.raises(InputError, match="'M=M1' is constant among the 4 patients"):
        fit_cox(table, enc, source="clin.csv")


# --- Subgroups ---------------------------------------------------------------------------------


def test_subgroup_hazard_ratios_match_fits_within_strata(colon):
    enc = make_encoding(colon, ["risk_group", "rx", "sex", "age"])
    sub = subgroup_hazard_ratios(colon, enc)
    assert sub["subgroup"][sub["covariate"] == "rx"].tolist() == ["Lev", "Lev+5FU", "Obs"]
    assert sub["subgroup"][sub["covariate"] == "sex"].tolist() == ["0", "1"]  # few values
    assert sub["subgroup"][sub["covariate"] == "age"].tolist() == ["<= 61", "> 61"]
    women = colon[colon["sex"] == 0]
    direct = CoxPHFitter().fit(
        pd.DataFrame(
            {
                "time": women["time"],
                "event": women["event"],
                "high": (women["risk_group"] == "high").astype(float),
            }
        ),
        "time",
        "event",
    )
    row = sub[(sub["covariate"] == "sex") & (sub["subgroup"] == "0")].iloc[0]
    assert row["hr"] == pytest.approx(direct.summary.loc["high", "exp(coef)"], rel=1e-6)
    assert row["n"] == len(women)
    assert sub["n"][sub["covariate"] == "rx"].sum() == len(colon)
    assert sub["hr"].notna().all() and (sub["hr"] > 1).all()
    assert ((sub["p_interaction"] >= 0) & (sub["p_interaction"] <= 1)).all()


def test_subgroup_with_one_risk_group_is_reported_not_fitted():
    rng = np.random.default_rng(0)
    n = 40
    table = pd.DataFrame(
        {
            "time": rng.exponential(10, n),
            "event": rng.integers(0, 2, n),
            "M": ["M0"] * 30 + ["M1"] * 10,
            "risk_group": (["high", "low"] * 15) + ["high"] * 10,
        }
    )
    table.loc[0, "event"] = 1
    enc = make_encoding(table, ["risk_group", "M"])
    sub = subgroup_hazard_ratios(table, enc).set_index("subgroup")
    assert sub.loc["M1", "note"] == "one risk group only" and np.isnan(sub.loc["M1", "hr"])
    assert np.isfinite(sub.loc["M0", "hr"])
