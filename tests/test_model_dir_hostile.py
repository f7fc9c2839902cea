"""Hostile model directories: every recorded value checked, never a mix of two fits, never a
non-finite score labelled as a risk group."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mil_crcrs.model_dir as model_dir
from mil_crcrs import load_model
from mil_crcrs.data.store import write_bag
from mil_crcrs.errors import InputError
from mil_crcrs.train.cutoff import risk_group
from tests.helpers import assert_one_line_error, grid_coords, make_meta, run


@pytest.fixture
def model(tmp_path, tiny_model) -> Path:
    shutil.copytree(tiny_model / "model", tmp_path / "model")
    return tmp_path / "model"


def _edit_config(folder: Path, **values) -> None:
    config = json.loads((folder / "config.json").read_text())
    for key, value in values.items():
        if "." in key:
            outer, inner = key.split(".")
            config[outer][inner] = value
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


CONFIG_CASES = [
    ({"feature_dim": "4"}, "feature_dim must be a positive integer"),
    ({"feature_dim": 4.5}, "feature_dim must be a positive integer"),
    ({"fold_offsets": [None, 0.1]}, "fold_offsets must be a list of finite numbers"),
    ({"fold_offsets": [0.1]}, "fold_offsets has 1 entries for 2 weights files"),
    ({"fold_scales": [float("nan"), 1.0]}, "fold_scales must be a list of finite positive"),
    ({"ensemble_scale": float("inf")}, "ensemble_scale must be a finite positive number"),
    ({"ensemble_shift": "x"}, "ensemble_shift must be a finite number"),
    ({"cutoff": "median"}, "cutoff must be a mapping"),
    ({"cutoff.value": float("nan")}, "cutoff must be a mapping with a finite 'value'"),
    ({"model": [1]}, "model must be a mapping with the model's 'name'"),
    ({"weights": "fold_1.pt"}, "weights must be a list of file names"),
    ({"time_unit": 5}, "time_unit must be one of days, months, years"),
    ({"settings": [1, 2]}, "settings must be a mapping or null"),
    ({"encoder": 7}, "encoder must be an encoder name or null"),
]


@pytest.mark.parametrize("values, message", CONFIG_CASES)
def test_a_recorded_value_of_the_wrong_kind_is_refused_naming_file_and_key(model, values, message):
    _edit_config(model, **values)
    with pytest.raises(InputError, match=message) as err:
        load_model(model)
    assert str(model / "config.json") in str(err.value)


def test_weights_that_are_text_or_hold_nan_are_refused(model, tmp_path):
    state = torch.load(model / "fold_1.pt", weights_only=True)
    (model / "fold_1.pt").write_text("hello")
    config = json.loads((model / "config.json").read_text())
    del config["weights_sha256"]  # as an older model directory, without digests
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="fold_1.pt: not a readable weights file"):
        load_model(model)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save(state, model / "fold_1.pt")
    with pytest.raises(InputError, match=f"fold_1.pt: weights '{key}' hold NaN or inf"):
        load_model(model)


def test_an_edited_weights_file_is_refused_by_its_digest(model):
    shutil.copy(model / "fold_2.pt", model / "fold_1.pt")  # valid weights, not the recorded ones
    with pytest.raises(InputError, match="fold_1.pt: not the weights config.json records"):
        load_model(model)


def test_a_damaged_metrics_file_is_a_warning_for_scoring(model):
    (model / "metrics.json").write_text("{not json")
    with pytest.warns(UserWarning, match="metrics.json: unreadable, ignored"):
        loaded = load_model(model)
    assert loaded.metrics == {}


def test_a_directory_replaced_while_it_is_read_is_read_again_not_mixed(
    model, tmp_path, monkeypatch
):
    """Another fit swaps the folder between ``config.json`` and the weights: the reader must
    not pair the first config with the second fit's weights."""
    other = tmp_path / "other"
    shutil.copytree(model, other)
    _edit_config(other, fold_offsets=[5.0, 6.0])  # another fit, other weights and config
    for name in ("fold_1.pt", "fold_2.pt"):
        state = torch.load(other / name, weights_only=True)
        torch.save(
            {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, other / name
        )
    import hashlib

    digests = [
        hashlib.sha256((other / n).read_bytes()).hexdigest() for n in ("fold_1.pt", "fold_2.pt")
    ]
    _edit_config(other, weights_sha256=digests)
    real = model_dir._read_models
    swapped = []

    def replace_then_read(directory, config):
        if not swapped:  # the first config is read: now the other fit replaces the folder
            shutil.rmtree(model)
            shutil.copytree(other, model)
            swapped.append(True)
        return real(directory, config)

    monkeypatch.setattr(model_dir, "_read_models", replace_then_read)
    loaded = load_model(model)
    assert swapped and loaded.offsets == [5.0, 6.0]  # all of the second fit, none of the first


def test_a_non_finite_score_is_an_error_never_a_risk_group(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="non-finite"):
        risk_group(np.array([0.1, np.nan]), 0.0)
    features = tmp_path / "features"
    huge = np.full((5, 4), 3e38, dtype=np.float32)  # finite, but a mean model overflows on it
    write_bag(features / "p0.h5", huge, grid_coords(5, 512), make_meta("p0"), dtype="float32")
    write_bag(features / "p1.h5", np.ones((5, 4), np.float32), grid_coords(5, 512), make_meta("p1"))
    model_and_features = ["--model", tiny_model / "model", "--features", features]
    result = run("predict", *model_and_features, "--out", tmp_path / "p.csv", "--device", "cpu")
    assert_one_line_error(result, "'p0'", "non-finite CRCRS")
    assert not (tmp_path / "p.csv").exists()
