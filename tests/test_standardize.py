"""Per-dimension feature standardisation: fitted inside the fold, stored, applied everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mil_crcrs import FitSettings, fit, load_model
from mil_crcrs.data.bags import PatientBags
from mil_crcrs.data.cache import to_cache_dtype
from mil_crcrs.data.cohort import read_cohort
from mil_crcrs.data.store import FeatureMeta, FeatureStore, write_bag
from mil_crcrs.models import create_model
from mil_crcrs.train.standardize import FeatureNorm, attach_feature_norm, feature_moments
from tests.helpers import tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

DIM = 5
#: Uneven like foundation-model features: scales 100x apart, non-zero means, one constant dim.
SCALE = np.array([100.0, 1.0, 0.5, 20.0, 0.0])
SHIFT = np.array([50.0, -3.0, 10.0, 0.0, 7.0])


def write_patient(folder: Path, i: int, x: np.ndarray) -> None:
    meta = FeatureMeta(f"s{i:03d}", "toy", 224, 448, 0.5, 0.25, 5000, 5000)
    coords = np.stack([np.arange(len(x)) % 4, np.arange(len(x)) // 4], 1) * 448
    write_bag(folder / f"s{i:03d}.h5", x, coords, meta, dtype="float32")


def uneven_cohort(folder: Path, n: int = 24, seed: int = 0) -> tuple[Path, Path, dict]:
    rng = np.random.default_rng(seed)
    rows, raw = [], {}
    for i in range(n):
        x = rng.normal(size=(int(rng.integers(4, 10)), DIM)) * SCALE + SHIFT
        raw[i] = x
        write_patient(folder / "features", i, x)
        t = rng.exponential(np.exp(-x[:, 1].mean())) * 100
        rows.append((f"p{i:03d}", f"s{i:03d}", round(t, 3), int(rng.random() < 0.8)))
    table = pd.DataFrame(rows, columns=["patient_id", "slide_id", "time", "event"])
    table.to_csv(folder / "clinical.csv", index=False)
    return folder / "features", folder / "clinical.csv", raw


def settings() -> FitSettings:
    return tiny(epochs=1, seed=1, standardize=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return uneven_cohort(tmp_path_factory.mktemp("uneven"))


@pytest.fixture(scope="module")
def fitted(cohort):
    features, clinical, _ = cohort
    return fit(features, clinical, settings())


def test_moments_match_numpy_over_the_pooled_tiles(cohort):
    features, clinical, raw = cohort
    bags = PatientBags(read_cohort(clinical), FeatureStore(features))
    chosen = [0, 3, 4, 11, 17]
    mean, sd = feature_moments(bags, chosen)
    tiles = np.concatenate([raw[i] for i in chosen])
    np.testing.assert_allclose(mean, tiles.mean(0), rtol=1e-6)  # files are float32
    np.testing.assert_allclose(sd[:4], tiles[:, :4].std(0), rtol=1e-5)
    assert sd[4] == 1.0  # the constant dimension is centred, not divided by zero


def test_a_normed_model_reads_raw_features_as_the_plain_model_reads_standardised_ones():
    torch.manual_seed(0)
    model = create_model("abmil", in_dim=DIM, hidden_dim=8, attn_dim=4).eval()
    x = torch.randn(2, 7, DIM, dtype=torch.float64).float() * 30 + 4
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    mean, sd = np.linspace(-2, 2, DIM), np.linspace(0.5, 40, DIM)
    plain = model(((x - torch.tensor(mean)) / torch.tensor(sd)).float(), mask=mask)
    attach_feature_norm(model, mean, sd)
    normed = model(x, mask=mask)
    torch.testing.assert_close(normed.risk, plain.risk, rtol=1e-5, atol=1e-5)
    assert set(model.state_dict()) >= {"input_norm.mean", "input_norm.sd"}


def test_each_fold_is_standardised_on_its_training_part_only(tmp_path, cohort, fitted):
    features, clinical, raw = cohort
    folds = fitted.oof_predictions["fold"].to_numpy()
    # fit trains on the bag cache, which holds features in float16 where that does not blur them
    bags = [to_cache_dtype(b) for b in PatientBags(read_cohort(clinical), FeatureStore(features))]
    for k, model in enumerate(fitted.fold_models, start=1):
        mean, sd = feature_moments(bags, np.flatnonzero(folds != k))
        np.testing.assert_allclose(model.input_norm.mean.numpy(), mean, rtol=1e-6)
        np.testing.assert_allclose(model.input_norm.sd.numpy(), sd, rtol=1e-6)

    # Change every held-out patient of fold 1 beyond recognition and fit again: fold 1's
    # statistics must not move (a leak would move them), the other folds' must.
    changed = tmp_path / "features"
    changed.mkdir()
    for i, x in raw.items():
        write_patient(changed, i, x * 3.0 + 100.0 if folds[i] == 1 else x)
    again = fit(changed, clinical, settings())
    assert (again.oof_predictions["fold"].to_numpy() == folds).all()  # the same folds
    first, other = again.fold_models[0].input_norm, again.fold_models[1].input_norm
    assert torch.equal(first.mean, fitted.fold_models[0].input_norm.mean)
    assert torch.equal(first.sd, fitted.fold_models[0].input_norm.sd)
    assert not torch.equal(other.mean, fitted.fold_models[1].input_norm.mean)


def test_saved_norm_is_applied_at_predict_heatmap_and_gradcam_time(tmp_path, cohort, fitted):
    features, clinical, _ = cohort
    fitted.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["feature_norm"] is True and config["settings"]["standardize"] is True
    state = torch.load(tmp_path / "model" / "fold_2.pt", weights_only=True)
    assert torch.equal(state["input_norm.sd"], fitted.fold_models[1].input_norm.sd)
    loaded = load_model(tmp_path / "model")
    table = fitted.predict(features, clinical, device="cpu")
    pd.testing.assert_frame_equal(table, loaded.predict(features, clinical, device="cpu"))
    # Without the norm the same weights would score differently: the norm is in use.
    stripped = [create_model(**m.config) for m in loaded.fold_models]
    for plain, model in zip(stripped, loaded.fold_models, strict=True):
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("input_norm")}
        plain.load_state_dict(state)
        plain.eval()
    bag = PatientBags(read_cohort(clinical), FeatureStore(features))[3]
    x = torch.as_tensor(bag.features, dtype=torch.float32)[None]
    with torch.no_grad():
        assert not np.isclose(
            float(stripped[0](x).risk), float(loaded.fold_models[0](x).risk), atol=1e-3
        )
    risk, _, contribution = loaded.patient_attention(bag)
    assert risk == pytest.approx(table["crcrs"].iloc[3], abs=1e-6)
    assert float(loaded.risk(x)[0].detach()) == pytest.approx(risk, abs=1e-6)


def test_feature_norm_refuses_bad_statistics():
    with pytest.raises(ValueError, match="positive"):
        FeatureNorm(np.zeros(3), np.array([1.0, 0.0, 1.0]))
