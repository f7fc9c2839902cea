"""C-indices, time-dependent AUC, Brier score and bootstrap CIs against scikit-survival/lifelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from mil_crcrs.stats.discrimination import (
    brier_grid,
    evaluate_discrimination,
    integrated_brier,
    time_dependent_auc,
    uno_c,
)
from mil_crcrs.stats.metrics import harrell_c
from tests.helpers import colon_raw

YEAR = 365.25


@pytest.fixture(scope="module")
def colon() -> pd.DataFrame:
    """R's survival::colon death outcome (oncodatasets, GPL-3, read in place at test time)."""
    raw = colon_raw()
    return pd.DataFrame(
        {
            "time": raw["Stime"].astype(float),
            "event": raw["event"].astype(int),
            # stand-in score: higher = worse; rounded so that equal scores are exactly equal
            "score": (
                0.5 * raw["node4"]
                + 0.4 * raw["extent"]
                + 0.3 * raw["obstruct"]
                + 0.3 * raw["adhere"]
            ).round(6),
            "age": raw["age"].astype(float),
        }
    )


def test_harrell_c_matches_sksurv_and_lifelines(colon):
    t, e, r = colon["time"].to_numpy(), colon["event"].to_numpy(), colon["score"].to_numpy()
    c = harrell_c(t, e, r)
    # concordance_index_censored(event.astype(bool), time, risk)[0]
    assert c == pytest.approx(concordance_index_censored(e.astype(bool), t, r)[0], abs=1e-12)
    # lifelines' concordance_index(time, -risk, event): it wants "higher = longer survival"
    assert c == pytest.approx(concordance_index(t, -r, e), abs=1e-12)
    assert 0.6 < c < 0.7


def test_harrell_c_hand_checkable():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 1, 0])
    assert harrell_c(time, event, np.array([4.0, 3.0, 2.0, 1.0])) == 1.0
    assert harrell_c(time, event, np.array([1.0, 2.0, 3.0, 4.0])) == 0.0
    assert harrell_c(time, event, np.ones(4)) == 0.5


def test_uno_auc_and_brier_match_sksurv(colon):
    t, e, r = colon["time"].to_numpy(), colon["event"].to_numpy(), colon["score"].to_numpy()
    y = Surv.from_arrays(e.astype(bool), t)
    horizons = [YEAR, 3 * YEAR, 5 * YEAR]
    # concordance_index_ipcw(y, y, risk, tau=5 years)[0]
    assert uno_c(t, e, r, 5 * YEAR) == pytest.approx(
        concordance_index_ipcw(y, y, r, tau=5 * YEAR)[0]
    )
    # cumulative_dynamic_auc(y, y, risk, times)[0]
    np.testing.assert_allclose(
        time_dependent_auc(t, e, r, horizons), cumulative_dynamic_auc(y, y, r, horizons)[0]
    )
    grid = brier_grid(t, 5 * YEAR)
    assert grid[0] == pytest.approx(np.percentile(t, 5)) and grid[-1] == 5 * YEAR
    surv = np.exp(-np.outer(np.exp(r - r.mean()), grid) / (6 * YEAR))
    # integrated_brier_score(y, y, survival, grid)
    assert integrated_brier(t, e, surv, grid) == pytest.approx(
        integrated_brier_score(y, y, surv, grid)
    )


def test_evaluate_gives_point_estimates_and_bootstrap_cis(colon):
    t, e = colon["time"].to_numpy(), colon["event"].to_numpy()
    risk = {"score": colon["score"].to_numpy(), "age": colon["age"].to_numpy()}
    result = evaluate_discrimination(
        t,
        e,
        risk,
        [YEAR, 3 * YEAR],
        n_bootstrap=20,
        seed=1,
        comparisons=[("score", "age"), ("score", "score")],
    )
    rows = result.metrics

    def pick(model: str, metric: str) -> pd.DataFrame:
        return rows[(rows["model"] == model) & (rows["metric"] == metric)]

    harrell = pick("score", "harrell_c").iloc[0]
    assert harrell["estimate"] == pytest.approx(harrell_c(t, e, risk["score"]))
    assert np.isnan(harrell["horizon"])
    aucs = pick("score", "auc")
    assert aucs["horizon"].tolist() == [YEAR, 3 * YEAR]
    np.testing.assert_allclose(
        aucs["estimate"], time_dependent_auc(t, e, risk["score"], [YEAR, 3 * YEAR])
    )
    assert (rows["n_bootstrap"] == 20).all()
    assert ((rows["ci_lower"] <= rows["estimate"]) & (rows["estimate"] <= rows["ci_upper"])).all()
    assert "ibs" not in set(rows["metric"])  # no survival curves were given
    diffs = result.differences
    same = diffs[(diffs["reference"] == "score") & (diffs["metric"] == "harrell_c")].iloc[0]
    assert (same["difference"], same["ci_lower"], same["ci_upper"]) == (0, 0, 0)
    diff = diffs[(diffs["reference"] == "age") & (diffs["metric"] == "harrell_c")].iloc[0]
    expected = harrell_c(t, e, risk["score"]) - harrell_c(t, e, risk["age"])
    assert diff["difference"] == pytest.approx(expected)
    assert diff["ci_lower"] > 0  # the nodal/extent score beats age clearly
    assert len(diffs) == 2 * 4  # harrell, uno, auc at two horizons; per comparison
    assert set(result.auc_curve["model"]) == {"score", "age"}
    assert result.auc_curve["auc"].between(0, 1).all()


def test_bootstrap_is_reproducible_under_a_seed(colon):
    small = colon.iloc[:300]
    args = (
        small["time"].to_numpy(),
        small["event"].to_numpy(),
        {"score": small["score"].to_numpy()},
        [2 * YEAR],
    )
    a = evaluate_discrimination(*args, n_bootstrap=10, seed=3).metrics
    b = evaluate_discrimination(*args, n_bootstrap=10, seed=3).metrics
    c = evaluate_discrimination(*args, n_bootstrap=10, seed=4).metrics
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["ci_lower"], c["ci_lower"])


def test_brier_score_with_survival_curves(colon):
    t, e, r = colon["time"].to_numpy(), colon["event"].to_numpy(), colon["score"].to_numpy()
    grid = brier_grid(t, 3 * YEAR)
    good = np.exp(-np.outer(np.exp(r - r.mean()), grid) / (6 * YEAR))
    flat = np.tile(np.linspace(1.0, 0.6, grid.size), (len(t), 1))
    result = evaluate_discrimination(
        t,
        e,
        {"good": r, "flat": np.zeros(len(t))},
        [3 * YEAR],
        survival={"good": good, "flat": flat},
        grid=grid,
        n_bootstrap=0,
    )
    ibs = result.metrics[result.metrics["metric"] == "ibs"].set_index("model")["estimate"]
    assert 0 < ibs["good"] < 0.25 and 0 < ibs["flat"] < 0.25
    assert (result.metrics["n_bootstrap"] == 0).all()
    assert result.metrics["ci_lower"].isna().all()


def test_undefined_metric_in_a_resample_is_skipped_not_nan():
    # 8 patients, a horizon near the last follow-up: many resamples cannot evaluate it
    time = np.array([1.0, 2, 3, 4, 5, 6, 7, 8])
    event = np.array([1, 1, 0, 1, 1, 0, 1, 0])
    risk = {"r": -time}
    result = evaluate_discrimination(time, event, risk, [6.5], n_bootstrap=30, seed=0)
    auc = result.metrics[result.metrics["metric"] == "auc"].iloc[0]
    assert auc["estimate"] == 1.0
    assert 0 < auc["n_bootstrap"] < 30
    assert np.isfinite(auc["ci_lower"])
