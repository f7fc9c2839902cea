"""``crcrs fit`` and ``crcrs predict`` end to end, and their one-line errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from mil_crcrs.simulate import SimulationSettings, simulate_cohort
from tests.helpers import assert_one_line_error, run

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

FAST = ["--folds", "3", "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def model_dir(sim, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "model"
    result = run(
        "fit",
        "--features",
        sim.features_dir,
        "--clinical",
        sim.clinical_csv,
        "--out",
        out,
        *FAST,
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_fit_writes_the_model_directory_and_a_summary(model_dir):
    out, output = model_dir
    for name in ("config.json", "fold_1.pt", "fold_3.pt", "metrics.json", "oof_predictions.csv"):
        assert (out / name).is_file()
    assert "Harrell C per fold:" in output and "+-" in output
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["harrell_c_per_fold"]) == 3
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert list(oof.columns) == ["patient_id", "crcrs", "risk_group", "time", "event", "fold"]
    assert len(oof) == 24


def test_fit_passes_the_optimiser_options_into_the_saved_settings(sim, tmp_path):
    out = tmp_path / "model"
    args = ["--features", sim.features_dir, "--clinical", sim.clinical_csv, "--out", out, *FAST]
    result = run("fit", *args, "--schedule", "onecycle", "--lr", "0.005")
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["schedule"] == "onecycle" and settings["lr"] == 0.005
    bad = run("fit", *args, "--schedule", "step")  # a click usage error, like every Choice
    assert bad.exit_code == 2 and "Traceback" not in bad.output and "'--schedule'" in bad.output


def test_predict_writes_one_row_per_patient_and_attention(sim, model_dir, tmp_path):
    out, _ = model_dir
    pred, att = tmp_path / "pred.csv", tmp_path / "att"
    result = run(
        "predict",
        "--model",
        out,
        "--features",
        sim.features_dir,
        "--clinical",
        sim.clinical_csv,
        "--out",
        pred,
        "--attention",
        att,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(pred)
    assert list(table.columns) == ["patient_id", "crcrs", "risk_group", "time", "event"]
    assert len(table) == 24 and set(table["risk_group"]) <= {"high", "low"}
    clinical = pd.read_csv(sim.clinical_csv)
    assert sorted(p.stem for p in att.glob("*.h5")) == sorted(clinical["slide_id"])
    with h5py.File(next(att.glob("*.h5"))) as f:
        assert f["coords"].shape == (f["attention"].shape[0], 2)
        assert np.all(f["attention"][...] >= 0)


def test_predict_without_a_table_scores_each_feature_file(sim, model_dir, tmp_path):
    out, _ = model_dir
    result = run(
        "predict",
        "--model",
        out,
        "--features",
        sim.features_dir,
        "--out",
        tmp_path / "p.csv",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == ["patient_id", "crcrs", "risk_group"]
    assert len(table) == len(list(sim.features_dir.glob("*.h5")))


def test_fit_bad_inputs_end_in_one_line(sim, tmp_path):
    base = ["fit", "--features", sim.features_dir, "--out", tmp_path / "m", *FAST]
    assert_one_line_error(run(*base, "--clinical", tmp_path / "nope.csv"), "nope.csv")
    unknown = run(*base, "--clinical", sim.clinical_csv, "--model", "perceiver")
    assert unknown.exit_code == 2 and "Traceback" not in unknown.output
    assert "'perceiver' is not one of 'abmil'" in unknown.output  # the registry's names
    assert_one_line_error(
        run(*base, "--clinical", sim.clinical_csv, "--batch-size", "1"),
        "error: --batch-size must be at least 2, got 1",
    )
    assert_one_line_error(
        run(*base, "--clinical", sim.clinical_csv, "--heads", "2"),
        "--heads heads: not an option of abmil",
    )
    censored = pd.read_csv(sim.clinical_csv).assign(event=0)
    censored.to_csv(tmp_path / "censored.csv", index=False)
    assert_one_line_error(run(*base, "--clinical", tmp_path / "censored.csv"), "no events")
    few = pd.read_csv(sim.clinical_csv)
    few["event"] = (few["patient_id"] == few["patient_id"].iloc[0]).astype(int)
    few.loc[few["patient_id"] == few["patient_id"].iloc[-1], "event"] = 1
    few.to_csv(tmp_path / "few.csv", index=False)
    assert_one_line_error(
        run(*base, "--clinical", tmp_path / "few.csv"), "--folds is 3, but", "reduce folds to 2"
    )
    assert_one_line_error(
        run(*base[: -len(FAST)], "--clinical", sim.clinical_csv, "--folds", "50", "--epochs", "1"),
        "fewer than the 50 folds",
    )


def test_predict_bad_inputs_end_in_one_line(sim, model_dir, tmp_path):
    out, _ = model_dir
    pred = tmp_path / "p.csv"
    assert_one_line_error(
        run(
            "predict",
            "--model",
            tmp_path / "nowhere",
            "--features",
            sim.features_dir,
            "--out",
            pred,
        ),
        "no such model directory",
    )
    wide = simulate_cohort(
        tmp_path / "wide", SimulationSettings(n_patients=3, tiles_per_slide=(4, 6), dim=12)
    )
    assert_one_line_error(
        run("predict", "--model", out, "--features", wide.features_dir, "--out", pred),
        "dim 12",
        "dim 8",
    )
    assert not pred.exists()


def test_a_read_setting_error_names_the_flag_the_user_typed(tmp_path):
    # ReadSettings names its field tile_size_level0; the flag is --tile-size.
    result = run("inspect", tmp_path, "--tile-size", "0")
    assert_one_line_error(result, "--tile-size must be at least 1")
    assert "tile-size-level0" not in result.stderr


def test_predict_reads_the_table_in_the_models_time_unit_unless_told(sim, model_dir, tmp_path):
    out, _ = model_dir
    months = tmp_path / "model_months"
    months.mkdir()
    for path in out.iterdir():
        if path.is_file():
            (months / path.name).write_bytes(path.read_bytes())
    config = json.loads((months / "config.json").read_text())
    assert config["time_unit"] == "days"
    config["time_unit"] = "months"
    (months / "config.json").write_text(json.dumps(config))
    base = ["--features", sim.features_dir, "--clinical", sim.clinical_csv, "--device", "cpu"]
    for args, expected in [
        ([], "read in months (the model's unit)"),
        (["--time-unit", "years"], "read in years (--time-unit)"),
    ]:
        pred = tmp_path / f"pred{len(args)}.csv"
        result = run("predict", "--model", months, *base, "--out", pred, *args)
        assert result.exit_code == 0, result.output
        assert expected in pred.with_name(f"{pred.stem}.run.log").read_text()
