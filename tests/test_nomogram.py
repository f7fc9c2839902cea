"""Nomogram points and survival, calibration and decision curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from mil_crcrs.stats.covariates import make_encoding
from mil_crcrs.stats.cox import fit_cox
from mil_crcrs.stats.nomogram import (
    build_nomogram,
    calibration,
    decision_curve,
    net_benefit,
    pretty_ticks,
)
from tests.helpers import colon_raw

YEAR = 365.25


@pytest.fixture(scope="module")
def colon_model():
    """A Cox model of score + rx + age on R's colon death data (oncodatasets, read in place)."""
    raw = colon_raw()
    table = pd.DataFrame(
        {
            "time": raw["Stime"].astype(float),
            "event": raw["event"].astype(int),
            "crcrs": 0.5 * raw["node4"] + 0.4 * raw["extent"] + 0.3 * raw["obstruct"],
            "rx": raw["rx"],
            "age": raw["age"].astype(float),
            "sex": raw["sex"],
        }
    )
    enc = make_encoding(table, ["crcrs", "rx", "age", "sex"])
    return table, fit_cox(table, enc, "nomogram")


def test_nomogram_survival_equals_lifelines_prediction(colon_model):
    table, model = colon_model
    horizons = [YEAR, 3 * YEAR, 5 * YEAR]
    nomo = build_nomogram(model, horizons)
    design = model.design(table)
    points = nomo.total_points(design)
    # CoxPHFitter.predict_survival_function(design, times=horizons)
    expected = model.fitter.predict_survival_function(design, times=horizons).to_numpy().T
    for i in range(len(horizons)):
        np.testing.assert_allclose(nomo.survival_from_points(points, i), expected[:, i], rtol=1e-10)


def test_points_scales(colon_model):
    _, model = colon_model
    nomo = build_nomogram(model, [YEAR])
    beta = model.fitter.params_
    scales = {s.variable: s for s in nomo.scales}
    assert max(max(s.points) for s in nomo.scales) == pytest.approx(100.0)
    assert min(min(s.points) for s in nomo.scales) == pytest.approx(0.0)
    rx = scales["rx"]
    assert rx.values == ("Obs", "Lev", "Lev+5FU")
    # Lev+5FU protects: the reference (Obs) and Lev carry points, Lev+5FU carries 0
    assert rx.points[2] == 0.0
    assert rx.points[0] - rx.points[1] == pytest.approx(-beta["rx=Lev"] * nomo.points_per_unit)
    age = scales["age"]
    assert age.values == (20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0)  # round ticks in 18..85
    np.testing.assert_allclose(np.diff(age.points), beta["age"] * 10 * nomo.points_per_unit)
    assert scales["sex"].values == (0.0, 1.0)  # two values: shown as they are
    table = nomo.points_table()
    assert set(table["variable"]) == {"crcrs", "rx", "age", "sex"}
    surv = nomo.survival_table()
    assert surv["survival"].is_monotonic_decreasing  # more points, lower survival


def test_pretty_ticks():
    np.testing.assert_allclose(pretty_ticks(18, 85, 7), [20, 30, 40, 50, 60, 70, 80])
    np.testing.assert_allclose(pretty_ticks(-3.26, 2.54, 7), [-3, -2, -1, 0, 1, 2])
    np.testing.assert_allclose(pretty_ticks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(pretty_ticks(3, 3), [3])


def test_calibration_groups_match_kaplan_meier(colon_model):
    table, model = colon_model
    design = model.design(table)
    pred = model.survival(design, [3 * YEAR])[:, 0]
    cal = calibration(pred, table["time"], table["event"], 3 * YEAR, n_groups=5)
    assert len(cal) == 5 and cal["n"].sum() == len(table)
    assert cal["predicted"].is_monotonic_increasing
    order = np.argsort(pred, kind="stable")
    lowest = order[: cal["n"].iloc[0]]
    kmf = KaplanMeierFitter().fit(table["time"].iloc[lowest], table["event"].iloc[lowest])
    assert cal["observed"].iloc[0] == pytest.approx(
        float(kmf.survival_function_at_times([3 * YEAR]).iloc[0])
    )
    assert cal["predicted"].iloc[0] == pytest.approx(pred[lowest].mean())
    assert (cal["observed_lower"] <= cal["observed"]).all()
    assert (cal["observed"] <= cal["observed_upper"]).all()
    # a fitted Cox model is calibrated on its own data: within 0.08 in every group
    assert (cal["predicted"] - cal["observed"]).abs().max() < 0.08


def test_calibration_uses_fewer_groups_for_small_cohorts():
    pred = np.linspace(0.2, 0.9, 25)
    cal = calibration(pred, np.arange(1.0, 26.0), np.ones(25, int), 10.0, n_groups=5)
    assert len(cal) == 2  # at least 10 patients a group


def test_net_benefit_without_censoring_is_binary_net_benefit():
    # Horizon 10: patients 0-3 died before it, 4-9 outlived it (no censoring before 10).
    time = np.array([1.0, 2, 3, 4, 20, 20, 20, 20, 20, 20])
    event = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    risk = np.array([0.9, 0.8, 0.7, 0.2, 0.75, 0.1, 0.1, 0.1, 0.1, 0.1])
    nb = net_benefit(risk, time, event, 10.0, np.array([0.5, 0.95]))
    # pt = 0.5: treated = {0, 1, 2, 4}: TP = 3, FP = 1 -> 3/10 - 1/10 * 1 = 0.2
    assert nb[0] == pytest.approx(0.2)
    assert nb[1] == 0.0  # nobody treated
    treat_all = net_benefit(None, time, event, 10.0, np.array([0.2]))
    # TP = 4, FP = 6: 0.4 - 0.6 * 0.25 = 0.25
    assert treat_all[0] == pytest.approx(0.25)


def test_decision_curve_has_models_and_references():
    rng = np.random.default_rng(0)
    time = rng.exponential(5, 100)
    event = rng.integers(0, 2, 100)
    dca = decision_curve({"m": rng.uniform(0, 1, 100)}, time, event, 3.0)
    assert set(dca["model"]) == {"m", "treat all", "treat none"}
    assert (dca.loc[dca["model"] == "treat none", "net_benefit"] == 0).all()
    assert len(dca) == 3 * 99 and np.isfinite(dca["net_benefit"]).all()
