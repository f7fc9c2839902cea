"""``crcrs fit``: every FitSettings field is a flag, and ``--config`` reads the same fields."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mil_crcrs.errors import InputError
from mil_crcrs.train.config import read_settings_file
from mil_crcrs.train.settings import FitSettings, setting_default, setting_fields
from tests.helpers import assert_one_line_error, run

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

TOML = """
model = "abmil"
folds = 3
epochs = 2
batch_size = 8
lr = 5e-3
schedule = "onecycle"
max_tiles = 10
standardize = true
monitor = "loss"
average_epochs = 2
seeds = [0, 2]
device = "cpu"
progress = false

[model_kwargs]
hidden_dim = 8
attn_dim = 4
"""


def test_every_setting_has_a_flag_with_the_library_default():
    result = run("fit", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in setting_fields():
        if name != "model_kwargs":
            assert "--" + name.replace("_", "-") in text, name
    for option in ("--hidden-dim", "--attn-dim", "--dropout", "--heads"):  # model_kwargs
        assert option in text
    assert f"[default: {setting_default('lr')}]" in text
    assert "[cox|discrete]" in text and "[c|loss]" in text


def test_config_file_fit_and_config_json_repeat_the_run(sim, tmp_path):  # noqa: F811
    (tmp_path / "run.toml").write_text(TOML)
    data = ["--features", sim.features_dir, "--clinical", sim.clinical_csv]
    first = run("fit", *data, "--config", tmp_path / "run.toml", "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    saved = json.loads((tmp_path / "a" / "config.json").read_text())["settings"]
    expected = FitSettings(**read_settings_file(tmp_path / "run.toml"))
    assert FitSettings(**saved) == expected and saved["seeds"] == [0, 2]
    assert "2 seeds x 3 folds" in first.output
    # The model directory's config.json, fed back, repeats the run exactly.
    again = run("fit", *data, "--config", tmp_path / "a", "--out", tmp_path / "b")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["settings"] == saved
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "oof_predictions.csv"),
        pd.read_csv(tmp_path / "b" / "oof_predictions.csv"),
        check_exact=True,
    )


def test_flags_given_override_the_file(tmp_path):
    from cli.fit import build_settings

    (tmp_path / "run.toml").write_text(TOML)
    settings = build_settings(
        tmp_path / "run.toml", {"lr": 0.05, "model_kwarg_dropout": 0.5, "max_tiles": "all"}
    )
    assert settings.lr == 0.05 and settings.max_tiles is None and settings.schedule == "onecycle"
    assert settings.model_kwargs == {"hidden_dim": 8, "attn_dim": 4, "dropout": 0.5}


def test_yaml_and_json_read_the_same_fields(tmp_path):
    (tmp_path / "run.yaml").write_text("lr: 1e-3\nseeds: [1, 2]\nmodel_kwargs: {dropout: 0.1}\n")
    (tmp_path / "run.json").write_text(
        '{"lr": 0.001, "seeds": [1, 2], "model_kwargs": {"dropout": 0.1}}'
    )
    assert read_settings_file(tmp_path / "run.yaml") == read_settings_file(tmp_path / "run.json")
    assert read_settings_file(tmp_path / "run.yaml")["seeds"] == (1, 2)


@pytest.mark.parametrize(
    "text, needles",
    [
        ("lr_rate = 1.0\n", ["run.toml: setting lr_rate is not a setting", "known settings"]),
        ("epochs = 'many'\n", ["run.toml: setting epochs must be an integer"]),
        ("batch_size = 1\n", ["run.toml: batch_size must be at least 2"]),
        ("lr = [1\n", ["run.toml: not valid TOML"]),
        # a value checked only against the cohort, inside fit: still named with its file
        ("folds = 500\n", ["run.toml: folds is 500, but", "fewer than the 500 folds"]),
    ],
)
def test_bad_settings_files_end_in_one_line_naming_file_and_setting(sim, tmp_path, text, needles):  # noqa: F811
    (tmp_path / "run.toml").write_text(text)
    data = ["--features", sim.features_dir, "--clinical", sim.clinical_csv]
    result = run("fit", *data, "--config", tmp_path / "run.toml", "--out", tmp_path / "m")
    assert_one_line_error(result, *needles)


def test_unknown_settings_file_kinds_are_refused(tmp_path):
    (tmp_path / "run.ini").write_text("lr = 1")
    with pytest.raises(InputError, match="settings files are .toml, .yaml, .yml, .json"):
        read_settings_file(tmp_path / "run.ini")
    with pytest.raises(InputError, match="no such settings file"):
        read_settings_file(tmp_path / "none.toml")


def test_numpy_numbers_become_plain_settings():
    settings = FitSettings(seed=np.int64(3), seeds=[np.int64(1), 2], lr=np.float32(0.5))
    assert (settings.seed, settings.seeds, settings.lr) == (3, (1, 2), 0.5)
    assert type(settings.seed) is int and type(settings.lr) is float
    json.dumps(settings.__dict__)  # config.json can hold them
