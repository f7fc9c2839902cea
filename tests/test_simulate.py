"""The planted-signal simulator: its files, its determinism, and that each scenario plants what
it says (the rare phenotype's grade is invisible to mean pooling and diluted in any bag average,
the prevalence phenotype is not)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from mil_crcrs.data.bags import PatientBags
from mil_crcrs.data.cohort import read_cohort
from mil_crcrs.data.store import FeatureStore, read_bag
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.simulate import (
    SIGNAL_DIMS,
    TILE_SIZE_LEVEL0,
    SimulationSettings,
    censored_fraction,
    censoring_rate,
    draw_cohort,
    expected_censored_fraction,
    simulate_cohort,
)
from mil_crcrs.simulate.planted import read_planted
from mil_crcrs.simulate.world import make_world
from mil_crcrs.stats.metrics import harrell_c


@functools.cache
def draw(**kwargs):
    """One draw per distinct settings for the whole module (draws are deterministic)."""
    return draw_cohort(SimulationSettings(**kwargs))


def per_patient(d) -> pd.DataFrame:
    return d.clinical.groupby("patient_id", sort=False).first().loc[d.truth.index]


def mean_pooled(d) -> np.ndarray:
    """(n_patients, dim) mean of each patient's tiles over all of its slides."""
    slides = d.clinical.groupby("patient_id", sort=False)["slide_id"].apply(list)
    return np.stack(
        [np.concatenate([d.features[s] for s in slides[p]]).mean(0) for p in d.truth.index]
    )


def mean_pooling_cox_c(d, n_components: int = 8) -> float:
    """Held-out C of a penalised Cox model on PCA components of mean-pooled features.

    Two-fold (even / odd patients), so the C is not flattered by fitting and scoring on the same
    patients.
    """
    x, pat = mean_pooled(d), per_patient(d)
    time, event = pat["time"].to_numpy(), pat["event"].to_numpy()
    even = np.arange(len(x)) % 2 == 0
    cs = []
    for train, test in ((even, ~even), (~even, even)):
        pca = PCA(n_components).fit(x[train])
        names = [f"pc{i}" for i in range(n_components)]
        frame = pd.DataFrame(pca.transform(x[train]), columns=names)
        frame["time"], frame["event"] = time[train], event[train]
        cox = CoxPHFitter(penalizer=0.1).fit(frame, "time", "event")
        risk = cox.predict_log_partial_hazard(pd.DataFrame(pca.transform(x[test]), columns=names))
        cs.append(harrell_c(time[test], event[test], risk.to_numpy()))
    return float(np.mean(cs))


# --------------------------------------------------------------------------------------------
# Files


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    settings = SimulationSettings(scenario="both", n_patients=10, dim=16, seed=3, dtype="float16")
    return simulate_cohort(tmp_path_factory.mktemp("sim"), settings)


def test_outputs_are_read_by_the_store_and_the_cohort_reader(written):
    cohort = read_cohort(written.clinical_csv)
    store = FeatureStore(written.features_dir)
    assert len(cohort) == 10 and cohort.covariates == ("stage", "age")
    assert set(cohort.patients["stage"]) <= {"I", "II", "III", "IV"}
    assert store.check_consistent() == (16, "simulated-16")
    assert cohort.match_features(store.slide_ids) is cohort
    assert sorted(written.planted) == store.slide_ids
    assert {len(s) for s in cohort.slides.values()} <= {1, 2}
    bags = PatientBags(cohort, store)
    assert sum(b.n_tiles for b in bags) == sum(m.size for m in written.planted.values())


def test_feature_files_have_grid_coords_and_the_planted_mask(written):
    for sid, planted in written.planted.items():
        path = written.features_dir / f"{sid}.h5"
        bag = read_bag(path)
        assert bag.features.dtype == np.float16 and bag.features.shape == (planted.size, 16)
        assert 40 <= planted.size <= 120
        assert bag.info.tile_size_level0 == TILE_SIZE_LEVEL0 and bag.info.slide_id == sid
        assert np.all(bag.coords % TILE_SIZE_LEVEL0 == 0)
        assert len(np.unique(bag.coords, axis=0)) == planted.size  # one tile per grid cell
        assert bag.coords[:, 0].max() < bag.info.level0_width
        assert bag.coords[:, 1].max() < bag.info.level0_height
        region = read_planted(path)  # every tile of a feature file is tissue
        np.testing.assert_array_equal(region.tissue_xy, bag.coords)
        np.testing.assert_array_equal(region.is_planted(bag.coords, TILE_SIZE_LEVEL0), planted)


def test_truth_and_settings_are_written(written):
    truth = pd.read_csv(written.truth_csv, index_col="patient_id")
    np.testing.assert_allclose(truth["true_risk"], written.true_risk.loc[truth.index])
    saved = json.loads((written.out_dir / "simulation.json").read_text())
    assert saved["settings"]["scenario"] == "both" and saved["settings"]["seed"] == 3
    assert saved["oracle_c"] == pytest.approx(written.oracle_c)
    assert saved["encoder"] == "simulated-16"


def test_oracle_c_is_harrells_c_of_the_true_risk(written):
    pat = pd.read_csv(written.clinical_csv).groupby("patient_id").first()
    risk = written.true_risk.loc[pat.index].to_numpy()
    expected = concordance_index_censored(pat["event"].astype(bool), pat["time"], risk)[0]
    assert written.oracle_c == pytest.approx(expected)


def test_read_planted_refuses_a_file_that_is_not_simulated(write_features):
    with pytest.raises(InputError, match="sim_planted"):
        read_planted(write_features("s1"))


# --------------------------------------------------------------------------------------------
# Determinism


def test_same_settings_give_the_same_cohort_and_another_seed_another():
    a = draw_cohort(SimulationSettings(n_patients=15, seed=5))
    b = draw_cohort(SimulationSettings(n_patients=15, seed=5))
    c = draw_cohort(SimulationSettings(n_patients=15, seed=6))
    pd.testing.assert_frame_equal(a.clinical, b.clinical)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert a.features.keys() == b.features.keys()
    for sid in a.features:
        np.testing.assert_array_equal(a.features[sid], b.features[sid])
        np.testing.assert_array_equal(a.coords[sid], b.coords[sid])
        np.testing.assert_array_equal(a.planted[sid], b.planted[sid])
    assert not a.clinical["time"].equals(c.clinical["time"])


def test_simulate_cohort_writes_the_draw(tmp_path):
    settings = SimulationSettings(n_patients=4, dim=8, seed=2)
    sim, d = simulate_cohort(tmp_path, settings), draw_cohort(settings)
    pd.testing.assert_frame_equal(pd.read_csv(sim.clinical_csv), d.clinical.reset_index(drop=True))
    for sid, x in d.features.items():
        np.testing.assert_array_equal(read_bag(sim.features_dir / f"{sid}.h5").features, x)


def test_a_rerun_with_fewer_patients_leaves_no_stale_slides(tmp_path, write_features):
    simulate_cohort(tmp_path, SimulationSettings(n_patients=6, dim=8))
    own = write_features("mine", folder="features")  # not simulated: left alone
    sim = simulate_cohort(tmp_path, SimulationSettings(n_patients=2, dim=8))
    assert FeatureStore(sim.features_dir).slide_ids == sorted([*sim.planted, "mine"])
    assert own.exists()


def test_the_world_depends_on_world_seed_only():
    assert SimulationSettings().encoder == "simulated-64"
    assert SimulationSettings(world_seed=3).encoder == "simulated-64-w3"
    np.testing.assert_array_equal(make_world(64, 0).rotation, make_world(64, 0).rotation)
    assert not np.allclose(make_world(64, 0).rotation, make_world(64, 1).rotation)


# --------------------------------------------------------------------------------------------
# Scenarios (300 patients: enough for C-indices within a few hundredths)


def test_rare_signal_is_invisible_to_mean_pooling_but_known_to_the_oracle():
    d = draw(scenario="rare", n_patients=300)
    assert d.oracle_c > 0.75
    assert abs(mean_pooling_cox_c(d) - 0.5) < 0.08


def test_prevalence_signal_is_seen_by_mean_pooling():
    # The same pipeline that is blind to "rare" does see a linear phenotype: the check above
    # could fail.
    d = draw(scenario="prevalence", n_patients=300)
    assert d.oracle_c > 0.75
    assert mean_pooling_cox_c(d) > 0.72


def test_null_has_no_signal():
    d = draw(scenario="null", n_patients=300)
    assert d.oracle_c == 0.5 and np.all(d.truth["true_risk"] == 0)
    assert abs(mean_pooling_cox_c(d) - 0.5) < 0.08
    pat = per_patient(d)
    # the rare phenotype and its grade are planted but say nothing about the outcome
    for column in ("rare_fraction", "rare_grade"):
        assert abs(harrell_c(pat["time"], pat["event"], d.truth[column]) - 0.5) < 0.08


def signal_coordinate(d) -> dict[str, np.ndarray]:
    """Each patient's tiles projected on the signal subspace (n_tiles, SIGNAL_DIMS)."""
    slides = d.clinical.groupby("patient_id", sort=False)["slide_id"].apply(list)
    rotation = make_world(d.settings.dim, d.settings.world_seed).rotation
    return {
        p: (np.concatenate([d.features[s] for s in slides[p]]) @ rotation)[:, :SIGNAL_DIMS]
        for p in d.truth.index
    }


def test_rare_grade_is_read_from_the_rare_tiles_and_diluted_by_any_bag_average():
    d = draw(scenario="rare", n_patients=300)
    grade, risk = d.truth["rare_grade"], d.truth["true_risk"]
    assert risk.corr(grade) == pytest.approx(1.0)
    assert 4.0 <= grade.min() and grade.max() <= 7.0
    # A per-tile detector (how far a tile sits from the origin of the signal subspace) ...
    strength = {p: np.linalg.norm(x, axis=1) for p, x in signal_coordinate(d).items()}
    # ... averaged over the tiles it flags, as attention on those tiles reads it: the grade.
    on_flagged = pd.Series({p: s[s > 3.5].mean() for p, s in strength.items()})
    c_attention = on_flagged.corr(grade, method="spearman")
    # ... averaged over the whole bag, as mean pooling of the detector reads it: the grade
    # confounded with the rare fraction, which varies eight-fold and carries no risk.
    over_bag = pd.Series({p: np.maximum(s - 3.5, 0.0).mean() for p, s in strength.items()})
    c_mean = over_bag.corr(grade, method="spearman")
    assert c_attention > 0.93 and c_mean < 0.75 and c_attention - c_mean > 0.25  # 0.97, 0.54
    assert over_bag.corr(d.truth["rare_fraction"], method="spearman") > 0.6  # 0.81


def test_rare_tiles_share_the_background_mean_but_stand_out_non_linearly():
    d = draw(scenario="rare", n_patients=120)
    x = np.concatenate(list(d.features.values()))
    planted = np.concatenate(list(d.planted.values()))
    # Same mean: the gap is within sampling noise (prevalence tiles sit 3 units away).
    assert np.linalg.norm(x[planted].mean(0) - x[~planted].mean(0)) < 1.0
    # A per-tile non-linear function, the size of the signal coordinate, picks them out.
    signal = (x @ make_world(64, 0).rotation)[:, :SIGNAL_DIMS]
    assert roc_auc_score(planted, np.linalg.norm(signal, axis=1)) > 0.99


def test_cluster_is_a_few_adjacent_tiles_in_half_the_patients_and_known_to_the_oracle():
    d = draw(scenario="cluster", n_patients=300)
    k = d.truth["cluster_tiles"]
    present = k > 0
    assert 0.4 < present.mean() < 0.6  # cluster_share 0.5
    assert k[present].between(4, 8).all()
    # The risk is the presence alone: two values, higher with a cluster.
    risk = d.truth["true_risk"]
    assert risk.nunique() == 2 and risk[present].min() > risk[~present].max()
    assert d.oracle_c > 0.7  # 0.752: a binary risk leaves many ties
    slides = d.clinical.groupby("patient_id", sort=False)["slide_id"].apply(list)
    for p in d.truth.index:
        on = [s for s in slides[p] if d.planted[s].any()]
        assert len(on) == int(present[p]) and sum(d.planted[s].sum() for s in on) == k[p]
        for s in on:  # one connected patch of grid cells (8-neighbourhood)
            cells = d.coords[s][d.planted[s]] // TILE_SIZE_LEVEL0
            reached, frontier = {tuple(cells[0])}, [cells[0]]
            while frontier:
                c = frontier.pop()
                for other in cells:
                    if np.abs(other - c).max() == 1 and tuple(other) not in reached:
                        reached.add(tuple(other))
                        frontier.append(other)
            assert len(reached) == len(cells)


def test_cluster_signal_is_invisible_to_mean_pooling_but_a_per_tile_maximum_finds_it():
    d = draw(scenario="cluster", n_patients=300)
    assert abs(mean_pooling_cox_c(d) - 0.5) < 0.08
    present = d.truth["cluster_tiles"] > 0
    strength = {p: np.linalg.norm(x, axis=1) for p, x in signal_coordinate(d).items()}
    assert roc_auc_score(present, [s.max() for s in strength.values()]) > 0.99
    # The cluster tiles are a few per cent of these bags (at most 8 of at least 40 tiles).
    share = d.truth.loc[present, "rare_fraction"]
    assert share.max() <= 8 / 40 and share.median() < 0.1


def test_uneven_scales_and_offsets_change_the_units_not_the_signal():
    even = draw(scenario="rare", n_patients=20)
    uneven = draw(scenario="rare", n_patients=20, scale_range=100.0, offset_sd=3.0)
    assert uneven.settings.encoder == "simulated-64-s100-o3"
    x, y = (np.concatenate(list(c.features.values())) for c in (even, uneven))
    sd = y.std(0)
    assert 30 < sd.max() / sd.min() < 150 and np.abs(y.mean(0) / sd).max() > 2
    # (scales span 100x; each dimension of the tiles themselves has sd about 1)
    # Per dimension, the same tiles up to an affine map: standardising undoes it.
    z = lambda a: (a - a.mean(0)) / a.std(0)  # noqa: E731
    np.testing.assert_allclose(z(x), z(y), atol=1e-3)
    pd.testing.assert_frame_equal(even.truth, uneven.truth)


def test_prevalence_tiles_are_shifted():
    d = draw(scenario="prevalence", n_patients=120)
    x = np.concatenate(list(d.features.values()))
    planted = np.concatenate(list(d.planted.values()))
    assert np.linalg.norm(x[planted].mean(0) - x[~planted].mean(0)) > 2.5


@pytest.mark.parametrize(
    "scenario, rare_mean, prevalence_mean",
    [
        ("rare", (0.04, 0.06), (0.0, 0.0)),
        ("prevalence", (0.0, 0.0), (0.22, 0.33)),
        ("both", (0.04, 0.06), (0.22, 0.33)),
        ("null", (0.04, 0.06), (0.0, 0.0)),
    ],
)
def test_planted_fractions_are_in_range(scenario, rare_mean, prevalence_mean):
    d = draw(scenario=scenario, n_patients=120)
    truth = d.truth
    assert rare_mean[0] <= truth["rare_fraction"].mean() <= rare_mean[1]
    assert prevalence_mean[0] <= truth["prevalence_fraction"].mean() <= prevalence_mean[1]
    assert truth["rare_fraction"].max() < 0.2  # 1-8 % drawn, plus binomial noise
    if scenario != "prevalence":  # at least one rare tile on every slide
        assert all(m.any() for m in d.planted.values())
    # the planted mask is the union of the planted phenotypes
    planted = np.concatenate(list(d.planted.values())).mean()
    n_tiles = np.array([x.shape[0] for x in d.features.values()]).sum()
    weights = d.clinical.groupby("patient_id", sort=False)["slide_id"].apply(
        lambda s: sum(d.features[i].shape[0] for i in s)
    )
    expected = (truth[["rare_fraction", "prevalence_fraction"]].sum(1) * weights).sum() / n_tiles
    assert planted == pytest.approx(expected)


@pytest.mark.parametrize(
    "scenario, rare_weight, prevalence_weight",
    [("rare", 1, 0), ("prevalence", 0, 1), ("both", 1, 1)],
)
def test_true_risk_has_sd_effect_and_follows_what_is_planted(
    scenario, rare_weight, prevalence_weight
):
    truth = draw(scenario=scenario, n_patients=120).truth
    assert truth["true_risk"].std(ddof=0) == pytest.approx(1.5)

    def z(column):
        return ((truth[column] - truth[column].mean()) / truth[column].std(ddof=0)).fillna(0)

    planted = rare_weight * z("rare_grade") + prevalence_weight * z("prevalence_fraction")
    assert truth["true_risk"].corr(planted) == pytest.approx(1.0)
    assert truth["rare_grade"].isna().all() == (rare_weight == 0)


# --------------------------------------------------------------------------------------------
# Outcome model


@pytest.mark.parametrize("shape", [1.0, 2.0])
def test_true_risk_is_the_log_hazard(shape):
    # Cox regression of the outcome on the true risk recovers a coefficient of 1.
    d = draw(scenario="rare", n_patients=300, weibull_shape=shape)
    frame = per_patient(d)[["time", "event"]].join(d.truth["true_risk"])
    cox = CoxPHFitter().fit(frame, "time", "event")
    assert cox.params_["true_risk"] == pytest.approx(1.0, abs=0.2)


def test_censoring_fraction_and_baseline_median():
    pat = per_patient(draw(scenario="rare", n_patients=300))
    assert 0.22 <= 1 - pat["event"].mean() <= 0.38
    null = per_patient(draw(scenario="null", n_patients=300, censoring=0.0))
    assert null["event"].all()
    assert 1826 * 0.8 < null["time"].median() < 1826 * 1.25
    assert null["time"].min() >= 1 and (null["time"] == null["time"].round()).all()


def test_censoring_rate_solves_the_censored_fraction():
    # The simulator's instance: drop-out before given event times. One event time has a closed
    # form, 1 - exp(-rate * t) = f, so rate = -log(1 - f) / t.
    one = np.array([500.0])
    rate = censoring_rate(lambda r: censored_fraction(r, one), 0.3)
    assert rate == pytest.approx(-np.log(0.7) / 500.0, rel=1e-12)
    # Many event times: the rate is brentq's root of the same equation, to the last bits.
    from scipy.optimize import brentq

    times = np.random.default_rng(0).exponential(1826.0, size=300)
    rate = censoring_rate(lambda r: censored_fraction(r, times), 0.3)
    assert censored_fraction(rate, times) == pytest.approx(0.3, abs=1e-12)
    root = brentq(lambda r: censored_fraction(r, times) - 0.3, 1e-12, 1.0, xtol=1e-300)
    assert rate == pytest.approx(root, rel=1e-12)
    # ... and censors that fraction of these patients when drop-outs are drawn.
    dropout = np.random.default_rng(1).exponential(1.0 / rate, size=(2000, len(times)))
    assert np.mean(dropout < times) == pytest.approx(0.3, abs=0.005)


def test_expected_censored_fraction_is_that_of_drawn_patients():
    # The demo's instance: exponential event times, exponential drop-out and an end of
    # follow-up, against a direct draw of all three.
    hazard = np.array([0.0005, 0.001, 0.004])
    rng = np.random.default_rng(2)
    event = rng.exponential(1.0 / hazard, size=(200_000, 3))
    dropout = rng.exponential(1.0 / 0.0007, size=(200_000, 3))
    drawn = np.mean(np.minimum(dropout, 1500.0) < event)
    assert expected_censored_fraction(0.0007, hazard, 1500.0) == pytest.approx(drawn, abs=0.003)
    rate = censoring_rate(lambda r: expected_censored_fraction(r, hazard, 1500.0), 0.6)
    assert expected_censored_fraction(rate, hazard, 1500.0) == pytest.approx(0.6, abs=1e-12)


def test_censoring_rate_edge_cases():
    # Enough censoring without drop-out: rate 0; a fraction no rate reaches: an error.
    assert censoring_rate(lambda r: 0.4 + r, 0.3) == 0.0
    assert censoring_rate(lambda r: censored_fraction(r, np.array([1.0])), 0.0) == 0.0
    with pytest.raises(ValueError, match="no drop-out rate"):
        censoring_rate(lambda r: 0.5 * censored_fraction(r, np.array([1.0])), 0.6)


def test_time_unit_converts_days():
    days = per_patient(draw(n_patients=20, seed=4))["time"]
    years = per_patient(draw(n_patients=20, seed=4, time_unit="years"))["time"]
    np.testing.assert_allclose(years, days / 365.25, atol=0.01)


def test_stage_follows_the_true_risk_and_age_does_not():
    d = draw(scenario="rare", n_patients=300)
    pat = per_patient(d)
    stage = pat["stage"].map({"I": 1, "II": 2, "III": 3, "IV": 4})
    risk = d.truth["true_risk"]
    assert 0.4 < stage.corr(risk, method="spearman") < 0.9
    assert abs(pat["age"].corr(risk, method="spearman")) < 0.2
    assert stage.value_counts(normalize=True).sort_index().tolist() == pytest.approx(
        [0.2, 0.3, 0.3, 0.2], abs=0.01
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scenario": "strong"}, "scenario"),
        ({"dim": 4}, "dim"),
        ({"censoring": 1.0}, "censoring"),
        ({"tiles_per_slide": (0, 5)}, "tiles_per_slide"),
        ({"n_patients": 1}, "n_patients"),
        ({"time_unit": "weeks"}, "time_unit"),
        ({"rare_fraction": (0.0, 0.6)}, "add up"),
        ({"dtype": "float64"}, "dtype"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        SimulationSettings(**kwargs)
    with pytest.raises(SettingError) as error:  # naming the setting, for the CLI to map
        SimulationSettings(**kwargs)
    assert error.value.setting == next(iter(kwargs))
