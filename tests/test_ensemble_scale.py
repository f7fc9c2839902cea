"""Repeated cross-validation with seeds, and out-of-fold and ensemble scores on one scale."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mil_crcrs import FitSettings, fit, load_model
from mil_crcrs.data.bags import PatientBags
from mil_crcrs.data.cache import CacheDtypeBags
from mil_crcrs.data.cohort import read_cohort
from mil_crcrs.data.store import FeatureStore
from mil_crcrs.simulate import SimulationSettings, simulate_cohort
from mil_crcrs.train.loop import predict_risk
from tests.helpers import tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_one_seed_in_seeds_is_the_plain_run(cohort, fitted):  # noqa: F811
    features, clinical = cohort
    again = fit(features, clinical, tiny(seed=0, seeds=[3]))  # seeds win; a list is accepted
    assert again.settings.seeds == (3,)
    assert np.array_equal(again.oof_predictions["crcrs"], fitted.oof_predictions["crcrs"])


def test_repeated_cv_trains_every_fold_with_every_seed(tmp_path, cohort):  # noqa: F811
    features, clinical = cohort
    model = fit(features, clinical, tiny(epochs=1, seeds=(0, 5)))
    m = model.metrics
    assert len(model.fold_models) == 6 and m["seeds"] == [0, 5]
    assert [(f["seed"], f["fold"]) for f in m["folds"]] == [
        (s, k) for s in (0, 5) for k in (1, 2, 3)
    ]
    per_model = np.array(m["harrell_c_per_fold"])
    assert m["harrell_c_mean"] == pytest.approx(per_model.mean())
    assert m["harrell_c_sd"] == pytest.approx(per_model.std(ddof=1))
    assert len(m["harrell_c_oof_per_seed"]) == 2
    # Each seed splits the folds anew, and each patient's out-of-fold score is the mean over
    # seeds of the one model per seed that never saw them.
    single = [fit(features, clinical, tiny(epochs=1, seed=s)) for s in (0, 5)]
    folds = [s.oof_predictions["fold"].to_numpy() for s in single]
    assert not np.array_equal(*folds)
    expected = np.mean([s.oof_predictions["crcrs"] for s in single], axis=0)
    np.testing.assert_allclose(model.oof_predictions["crcrs"], expected, atol=1e-12)
    model.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert len(config["weights"]) == 6 and config["runs"][3] == {"seed": 5, "fold": 1}
    loaded = load_model(tmp_path / "model")
    assert loaded.settings.seeds == (0, 5)
    np.testing.assert_allclose(
        loaded.predict(features, clinical, device="cpu")["crcrs"],
        model.predict(features, clinical, device="cpu")["crcrs"],
    )


@pytest.mark.parametrize(
    "scenario, effect, epochs", [("null", 0.0, 6), ("prevalence", 0.4, 6), ("prevalence", 1.5, 12)]
)
def test_new_patients_fall_in_the_high_group_as_often_as_training_ones(
    tmp_path, scenario, effect, epochs
):
    """The cutoff is fixed on out-of-fold scores; the ensemble's scores of patients it has never
    seen must sit on the same scale: as many above the median cutoff as in training, within
    sampling noise, and spread like the out-of-fold scores (averaging fold models that
    disagree would shrink them by up to 1/sqrt(K) without the calibration)."""

    def simulated(n, seed):
        settings = SimulationSettings(
            scenario=scenario,
            n_patients=n,
            tiles_per_slide=(8, 16),
            slides_per_patient=(1, 1),
            dim=8,
            effect=effect,
            seed=seed,
        )
        return simulate_cohort(tmp_path / f"cohort{seed}", settings)

    train, new = simulated(60, 0), simulated(200, 1)
    settings = FitSettings(
        model_kwargs={"hidden_dim": 8, "attn_dim": 4, "dropout": 0.1},
        folds=3,
        epochs=epochs,
        lr=1e-2,
        schedule="onecycle",
        patience=3,
        progress=False,
        device="cpu",
    )
    model = fit(train.features_dir, train.clinical_csv, settings)
    oof = model.oof_predictions
    scored = model.predict(new.features_dir, new.clinical_csv, device="cpu")
    train_share = float((oof["risk_group"] == "high").mean())
    new_share = float((scored["risk_group"] == "high").mean())
    noise = np.sqrt(0.25 / len(oof) + 0.25 / len(scored))  # the cutoff's and the share's
    assert abs(new_share - train_share) < 3 * noise, (new_share, train_share)
    ratio = scored["crcrs"].std() / oof["crcrs"].std()
    assert 0.75 < ratio < 1.5, ratio
    # The calibration did something: the raw mean of standardised fold risks spread less.
    scale = model.metrics["scale"]
    assert scale["ensemble_sd_before_calibration"] < scale["oof_sd"]


def test_a_format_1_model_directory_still_scores_as_it_did(tmp_path, cohort, fitted):  # noqa: F811
    """Version 1 stored centring offsets only: crcrs = mean_k (risk_k - offset_k)."""
    features, clinical = cohort
    fitted.save(tmp_path / "model")
    path = tmp_path / "model" / "config.json"
    config = json.loads(path.read_text())
    for key in ("fold_scales", "ensemble_scale", "ensemble_shift", "feature_norm", "runs"):
        config.pop(key)
    config["format_version"] = 1
    path.write_text(json.dumps(config))
    old = load_model(tmp_path / "model")
    table = old.predict(features, clinical, device="cpu")
    # read as predict() reads them: in the fit cache's float16 form
    bags = CacheDtypeBags(PatientBags(read_cohort(clinical), FeatureStore(features)))
    centred = [
        predict_risk(m, bags) - off
        for m, off in zip(fitted.fold_models, fitted.offsets, strict=True)
    ]
    np.testing.assert_allclose(table["crcrs"], np.mean(centred, axis=0), atol=1e-10)
