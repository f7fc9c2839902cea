"""Training, cross-validation, the CRCRS ensemble and the model directory."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from lifelines.utils import concordance_index

import mil_crcrs.train.loop as training
from mil_crcrs import CRCRSModel, FitSettings, fit, load_model
from mil_crcrs.data.bags import PatientBags
from mil_crcrs.data.cache import to_cache_dtype
from mil_crcrs.data.cohort import read_cohort
from mil_crcrs.data.store import FeatureStore
from mil_crcrs.errors import InputError
from mil_crcrs.model_dir import MODEL_FORMAT_VERSION
from mil_crcrs.stats.metrics import harrell_c
from mil_crcrs.train.batches import iterate_batches
from mil_crcrs.train.loop import predict_risk
from tests.helpers import DIM, record_weights, tiny, write_cohort

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_harrell_c_hand_checked_cases():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 1, 0])
    assert harrell_c(time, event, np.array([4.0, 3.0, 2.0, 1.0])) == 1.0  # all pairs concordant
    assert harrell_c(time, event, np.array([1.0, 2.0, 3.0, 4.0])) == 0.0  # all discordant
    assert harrell_c(time, event, np.zeros(4)) == 0.5  # all tied
    assert np.isnan(harrell_c(time, np.zeros(4), np.arange(4.0)))  # no event: undefined


def test_harrell_c_matches_lifelines_with_the_sign_flipped():
    rng = np.random.default_rng(1)
    time, event, risk = rng.exponential(size=50), rng.integers(0, 2, 50), rng.normal(size=50)
    # lifelines wants a score where higher = longer survival.
    assert harrell_c(time, event, risk) == pytest.approx(concordance_index(time, -risk, event))


# -- settings and bad input -----------------------------------------------------------------------


def test_unknown_model_names_the_known_ones():
    with pytest.raises(InputError, match="model must be one of abmil.*got 'resnet'"):
        FitSettings(model="resnet")


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"folds": 1}, "^folds must be at least 2"),
        ({"loss": "mse"}, "^loss must be one of cox, discrete"),
        ({"cutoff": "mean"}, "^cutoff must be one of"),
        ({"lr": 0.0}, "^lr must be positive"),
        ({"lr": "fast"}, "^lr must be a number, got 'fast'"),
        ({"seeds": (1, 1)}, "^seeds must be distinct"),
        ({"model_kwargs": {"in_dim": 3}}, "may not set in_dim"),
        ({"model_kwargs": {"heads": 3}}, "heads: not an option of abmil"),
    ],
)
def test_bad_settings_are_clear(kw, message):
    with pytest.raises(InputError, match=message):
        FitSettings(**kw)


def test_cohort_without_events(tmp_path):
    features, clinical = write_cohort(tmp_path, n=12, events=np.zeros(12, dtype=int))
    with pytest.raises(InputError, match="no events"):
        fit(features, clinical, tiny())


def test_fold_without_events_says_reduce_k(tmp_path):
    events = np.zeros(12, dtype=int)
    events[:2] = 1
    features, clinical = write_cohort(tmp_path, n=12, events=events)
    with pytest.raises(InputError, match="reduce folds to 2"):
        fit(features, clinical, tiny(folds=3))


def test_fewer_patients_than_folds(tmp_path):
    features, clinical = write_cohort(tmp_path, n=4, events=np.array([1, 1, 0, 1]))
    with pytest.raises(InputError, match="4 patient.*fewer than the 5 folds"):
        fit(features, clinical, tiny(folds=5))


# -- training -------------------------------------------------------------------------------------


def test_batches_hold_at_least_batch_size_bags_and_cap_tiles(cohort):
    features, clinical = cohort
    c = read_cohort(clinical)
    bags = PatientBags(c, FeatureStore(features), cache=True)
    idx = np.arange(len(bags))
    rng = np.random.default_rng(0)
    batches = list(iterate_batches(bags, idx, c.time, c.event, 8, rng, max_tiles=5))
    assert len(batches) == len(bags) // 8
    assert all(b.mask.shape[0] >= 8 for b, _, _ in batches)
    assert sum(b.mask.shape[0] for b, _, _ in batches) == len(bags)
    assert max(int(b.mask.sum(1).max()) for b, _, _ in batches) == 5


def test_cpu_fit_is_bitwise_reproducible_under_the_same_seed(cohort, fitted):
    features, clinical = cohort
    again = fit(features, clinical, tiny())
    assert np.array_equal(fitted.oof_predictions["crcrs"], again.oof_predictions["crcrs"])
    for a, b in zip(fitted.fold_models, again.fold_models, strict=True):
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    other = fit(features, clinical, tiny(seed=4))
    assert not np.array_equal(fitted.oof_predictions["crcrs"], other.oof_predictions["crcrs"])


def test_early_stopping_never_scores_the_reported_fold(cohort, monkeypatch):
    features, clinical = cohort
    calls, scored = [], []
    real_train, real_evaluate = training.train_model, training.evaluate

    def spy_train(model, bags, time, event, train_idx, val_idx, loss_fn, **kw):
        calls.append((set(train_idx.tolist()), set(val_idx.tolist()), [b.patient_id for b in bags]))
        scored.append([])
        return real_train(model, bags, time, event, train_idx, val_idx, loss_fn, **kw)

    def spy_evaluate(model, bags, *args, **kw):
        scored[-1].extend(b.patient_id for b in bags)
        return real_evaluate(model, bags, *args, **kw)

    monkeypatch.setattr("mil_crcrs.train.crossval.train_model", spy_train)
    monkeypatch.setattr(training, "evaluate", spy_evaluate)
    model = fit(features, clinical, tiny(epochs=2))
    oof = model.oof_predictions.set_index("patient_id")
    assert len(calls) == 3
    for k, ((train, val, ids), seen) in enumerate(zip(calls, scored, strict=True), start=1):
        reported = {i for i, pid in enumerate(ids) if oof.loc[pid, "fold"] == k}
        assert val and not (val & reported) and not (train & reported) and not (train & val)
        assert train | val == set(range(len(ids))) - reported  # carved from the training folds
        assert seen and not ({ids[i] for i in reported} & set(seen))


def test_oof_predictions_and_metrics(fitted):
    oof = fitted.oof_predictions
    assert list(oof.columns) == ["patient_id", "crcrs", "risk_group", "time", "event", "fold"]
    assert sorted(oof["fold"].unique()) == [1, 2, 3]
    assert oof["crcrs"].notna().all()
    m = fitted.metrics
    per_fold = [
        harrell_c(g["time"], g["event"], g["crcrs"]) for _, g in oof.groupby("fold", sort=True)
    ]
    assert m["harrell_c_per_fold"] == pytest.approx(per_fold)  # scaling does not change ranks
    assert m["harrell_c_mean"] == pytest.approx(np.mean(per_fold))
    assert m["harrell_c_sd"] == pytest.approx(np.std(per_fold, ddof=1))
    assert m["harrell_c_oof"] == pytest.approx(harrell_c(oof["time"], oof["event"], oof["crcrs"]))


def test_cutoff_is_the_median_of_the_oof_crcrs(fitted):
    oof = fitted.oof_predictions
    assert fitted.cutoff == pytest.approx(np.median(oof["crcrs"]))
    assert (oof["risk_group"] == np.where(oof["crcrs"] > fitted.cutoff, "high", "low")).all()


def test_crcrs_is_the_calibrated_mean_of_standardised_fold_risks(cohort, fitted):
    features, clinical = cohort
    c = read_cohort(clinical)
    # fit scores the bag cache, which holds features in float16 where that does not blur them
    bags = [to_cache_dtype(b) for b in PatientBags(c, FeatureStore(features))]
    oof = fitted.oof_predictions
    per_model = []
    for k, (m, centre, scale) in enumerate(
        zip(fitted.fold_models, fitted.offsets, fitted.scales, strict=True), start=1
    ):
        risk = predict_risk(m, bags, device="cpu")
        trained_on = (oof["fold"] != k).to_numpy()  # centre and scale from the training part
        assert centre == pytest.approx(risk[trained_on].mean())
        assert scale == pytest.approx(risk[trained_on].std())
        z = (risk - centre) / scale
        np.testing.assert_allclose(oof["crcrs"][~trained_on], z[~trained_on], atol=1e-5)  # OOF
        per_model.append(z)
    gain, shift = fitted.calibration
    table = fitted.predict(features, clinical, device="cpu")
    assert np.allclose(table["crcrs"], gain * np.mean(per_model, axis=0) + shift, atol=1e-10)
    # Calibrated: over the training cohort the ensemble has the out-of-fold mean and sd.
    assert table["crcrs"].mean() == pytest.approx(oof["crcrs"].mean(), abs=1e-5)
    assert table["crcrs"].std() == pytest.approx(oof["crcrs"].std(), rel=1e-4)
    assert (table["risk_group"] == np.where(table["crcrs"] > fitted.cutoff, "high", "low")).all()


def test_maxstat_discrete_loss_and_tile_cap(cohort):
    features, clinical = cohort
    model = fit(features, clinical, tiny(cutoff="maxstat", loss="discrete", n_bins=3, max_tiles=4))
    assert model.cutoff_rule.method == "maxstat"
    assert min(model.cutoff_rule.n_high, model.cutoff_rule.n_low) >= 0.1 * 36
    assert model.fold_models[0].n_outputs == 3
    assert len(model.config["time_bins"]) == 3


def test_validation_cohort_is_reported_separately(tmp_path, cohort):
    features, clinical = cohort
    val_features, val_clinical = write_cohort(tmp_path, n=20, seed=9)
    model = fit(
        features, clinical, tiny(epochs=1), val_clinical=val_clinical, val_features=val_features
    )
    v = model.metrics["validation"]
    assert v["n_patients"] == 20 and 0.0 <= v["harrell_c"] <= 1.0
    assert len(model.validation_predictions) == 20
    assert "p000" in set(model.oof_predictions["patient_id"])  # training, not validation, ids


# -- the model directory --------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_predictions(tmp_path, cohort, fitted):
    features, clinical = cohort
    fitted.save(tmp_path / "model")
    names = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert names == [
        "config.json",
        "fold_1.pt",
        "fold_2.pt",
        "fold_3.pt",
        "metrics.json",
        "oof_predictions.csv",
    ]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["format_version"] == MODEL_FORMAT_VERSION
    assert config["model"]["name"] == "abmil" and config["model"]["hidden_dim"] == 8
    assert (config["feature_dim"], config["encoder"]) == (DIM, "toy")
    assert config["cutoff"]["method"] == "median" and config["settings"]["folds"] == 3
    assert config["training_cohort"]["n_patients"] == 36
    loaded = load_model(tmp_path / "model")
    a = fitted.predict(features, clinical, device="cpu")
    b = loaded.predict(features, clinical, device="cpu")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert loaded.settings == fitted.settings and loaded.cutoff == fitted.cutoff


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_refuses_pickled_code(tmp_path, fitted):
    fitted.save(tmp_path / "model")
    marker = tmp_path / "code-ran"
    torch.save({"x": _Payload(marker)}, tmp_path / "model" / "fold_2.pt")
    record_weights(tmp_path / "model")  # past the digest check, to the loader's own refusal
    with pytest.raises(InputError, match="fold_2.pt: refused to load"):
        CRCRSModel.load(tmp_path / "model")
    assert not marker.exists()


def test_missing_and_newer_model_directories(tmp_path, fitted):
    with pytest.raises(InputError, match="no such model directory"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a mil-crcrs model directory"):
        load_model(tmp_path / "empty")
    fitted.save(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    config = json.loads(path.read_text())
    config["format_version"] = MODEL_FORMAT_VERSION + 1
    path.write_text(json.dumps(config))
    with pytest.raises(InputError, match="newer than this mil-crcrs"):
        load_model(tmp_path / "model")


def test_unknown_model_in_a_directory(tmp_path, fitted):
    fitted.save(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    config = json.loads(path.read_text())
    config["model"]["name"] = "perceiver"
    path.write_text(json.dumps(config))
    with pytest.raises(InputError, match="unknown model 'perceiver'"):
        load_model(tmp_path / "model")


def test_other_feature_dim_or_encoder_is_refused(tmp_path, fitted):
    wide, _ = write_cohort(tmp_path / "wide", n=3, dim=DIM + 2)
    with pytest.raises(InputError, match=f"dim {DIM + 2} but the model was trained on dim {DIM}"):
        fitted.predict(wide)
    other, _ = write_cohort(tmp_path / "other", n=3, encoder="uni")
    with pytest.raises(InputError, match="encoder 'uni' but the model was trained on 'toy'"):
        fitted.predict(other)


def test_predict_without_a_table_scores_each_file(cohort, fitted):
    features, _ = cohort
    table = fitted.predict(features, device="cpu")
    assert list(table.columns) == ["patient_id", "crcrs", "risk_group"]
    assert table["patient_id"].tolist() == [f"s{i:03d}" for i in range(36)]


def test_attention_files_and_patient_attention(tmp_path, cohort, fitted):
    features, clinical = cohort
    table = fitted.predict(features, clinical, attention_dir=tmp_path / "att", device="cpu")
    c = read_cohort(clinical)
    bags = PatientBags(c, FeatureStore(features))
    bag = bags[5]
    risk, attention, contribution = fitted.patient_attention(bag)
    assert risk == pytest.approx(table["crcrs"].iloc[5], abs=1e-6)
    assert attention.sum() == pytest.approx(1.0) and attention.shape == (bag.n_tiles,)
    reference = fitted.contribution_reference
    assert reference == pytest.approx(fitted.training_cohort["crcrs_mean"])
    assert reference + contribution.sum() == pytest.approx(risk, abs=1e-5)
    with h5py.File(tmp_path / "att" / f"{bag.slide_ids[0]}.h5") as f:
        assert np.array_equal(f["coords"][...], bag.coords)
        assert np.allclose(f["attention"][...], attention, atol=1e-6)
        assert np.allclose(f["contribution"][...], contribution, atol=1e-6)
        assert f.attrs["patient_id"] == bag.patient_id
    assert not list((tmp_path / "att").glob(".*"))  # no temporary files left


# -- quality on simulated cohorts -----------------------------------------------------------------


def _simulated_fit(tmp_path, scenario, model="abmil", n=80, dim=8, tiles=(20, 40), **kw):
    from mil_crcrs.simulate import SimulationSettings, simulate_cohort

    sim = simulate_cohort(
        tmp_path / f"{scenario}-{n}",
        SimulationSettings(
            scenario=scenario,
            n_patients=n,
            tiles_per_slide=tiles,
            dim=dim,
            seed=0,
            **({"slides_per_patient": (1, 1)} if n <= 100 else {}),
        ),
    )
    hidden = kw.pop("hidden_dim", 16)
    model_kwargs = {"hidden_dim": hidden, "dropout": 0.1}
    if model == "abmil":
        model_kwargs["attn_dim"] = hidden // 2
    settings = dict(
        model=model,
        model_kwargs=model_kwargs,
        folds=3,
        epochs=15,
        lr=1e-2,
        schedule="onecycle",
        batch_size=16,
        patience=5,
        progress=False,
        device="cpu",
        seed=0,
    )
    settings.update(kw)
    fitted = fit(sim.features_dir, sim.clinical_csv, FitSettings(**settings))
    return fitted.metrics["harrell_c_oof"], sim.oracle_c


def test_sanity_learns_a_planted_signal_and_finds_none_in_noise(tmp_path):
    # Small and fast: the linear "prevalence" phenotype, which every aggregator can see.
    c, oracle = _simulated_fit(tmp_path, "prevalence")
    assert c > 0.65 and c > oracle - 0.12
    c_null, _ = _simulated_fit(tmp_path, "null")
    assert abs(c_null - 0.5) < 0.1


#: The slow tier's cohorts and training: 600 patients, 5 folds.
LARGE = dict(
    n=600, dim=16, tiles=(40, 120), hidden_dim=64, folds=5, epochs=60, batch_size=32, patience=15
)


@pytest.fixture(scope="module")
def rare_fits(tmp_path_factory):
    """abmil and mean on the simulator's "rare" scenario (risk = rare-tile grade), 600 patients,
    5 folds (slow)."""
    tmp = tmp_path_factory.mktemp("rare")
    abmil, oracle = _simulated_fit(tmp, "rare", "abmil", **LARGE)
    mean, _ = _simulated_fit(tmp, "rare", "mean", **LARGE)
    return {"abmil": abmil, "mean": mean, "oracle": oracle}


@pytest.mark.slow
def test_rare_phenotype_abmil_comes_close_to_the_oracle(rare_fits):
    # Measured (2 cores, torch 2.14): abmil 0.760, oracle 0.819.
    assert rare_fits["abmil"] > rare_fits["oracle"] - 0.1


@pytest.mark.slow
def test_rare_phenotype_abmil_clearly_beats_mean(rare_fits):
    # The risk is the grade of rare tiles whose share of the bag varies eight-fold: mean pooling
    # of any per-tile function mixes the grade with that share, attention reads the rare tiles.
    # Measured: abmil 0.760, mean 0.590.
    assert rare_fits["abmil"] >= rare_fits["mean"] + 0.05


@pytest.mark.slow
def test_no_signal_gives_c_near_one_half(tmp_path):
    # Measured: 0.495.
    c, _ = _simulated_fit(tmp_path, "null", **LARGE)
    assert abs(c - 0.5) < 0.05
