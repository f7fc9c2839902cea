"""Units, overwrites and messages: what a user of CLAM, STAMP or TRIDENT runs into first.

Time units from the column's name, a fit that will not replace a model unasked, errors that
name the file and line they are in, hints that name the flag to type, no NaN in JSON, warnings
kept whole, progress and run.log for heatmap and report, and an offline hub that fails at once.
"""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from mil_crcrs.atomic import write_json
from mil_crcrs.data.cohort import read_cohort
from mil_crcrs.data.tables import Columns, time_unit_from_name
from mil_crcrs.errors import InputError
from tests.helpers import assert_one_line_error, run

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

FAST = ["--folds", "3", "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize(
    "name, unit",
    [
        ("survival_months", "months"),
        ("OS_days", "days"),
        ("dfs_years", "years"),
        ("OS.time.yrs", "years"),
        ("OS_MONTHS", "months"),
        ("time", None),
        ("OS", None),
        ("days_to_months", None),  # says two units: none
        ("monthly_dose", None),
    ],
)
def test_time_unit_from_the_column_name(name, unit):
    assert time_unit_from_name(name) == unit


@pytest.fixture(scope="module")
def months_table(sim, tmp_path_factory):
    truth = pd.read_csv(sim.clinical_csv)
    table = truth.rename(columns={"time": "survival_months"})
    path = tmp_path_factory.mktemp("months") / "cohort.csv"
    table.to_csv(path, index=False)
    return path


def test_fit_reads_the_unit_the_column_names_and_refuses_to_overwrite(sim, months_table, tmp_path):
    out = tmp_path / "model"
    args = ["fit", "--features", sim.features_dir, "--clinical", months_table]
    args += ["--time-col", "survival_months", "--out", out, *FAST]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["time_unit"] == "months"
    log = (out / "run.log").read_text()
    assert "read in months (from the column name 'survival_months'" in log
    before = (out / "config.json").read_bytes()
    again = run(*args)
    assert_one_line_error(again, "a model directory is already there", "--overwrite")
    assert (out / "config.json").read_bytes() == before
    assert not (tmp_path / ".model.checkpoints").exists()
    assert run(*args, "--overwrite").exit_code == 0


def test_a_refused_fit_leaves_no_checkpoint_folder(sim, tmp_path):
    out = tmp_path / "model"
    result = run(
        "fit", "--features", sim.features_dir, "--clinical", sim.clinical_csv, "--out", out,
        *FAST, "--folds", "40",
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert not (tmp_path / ".model.checkpoints").exists()


def test_slide_table_errors_name_their_own_file_and_line(tmp_path):
    clini = tmp_path / "clini.csv"
    clini.write_text("PATIENT,OS_days,STATUS\na,10,dead\nb,20,maybe\nc,30,alive\n")
    slides = tmp_path / "slide.csv"
    slides.write_text("PATIENT,FILENAME\nc,c1.h5\nc,c2.h5\nb,b1.h5\na,a1.h5\n")
    columns = Columns("PATIENT", "FILENAME", "OS_days", "STATUS")
    with pytest.raises(InputError, match=rf"^{clini}, line 3: column 'STATUS'") as err:
        read_cohort(clini, columns, slide_table=slides)
    assert "\n" not in str(err.value)
    clini.write_text("PATIENT,OS_days,STATUS\na,10,dead\nb,20,alive\nc,30,alive\n")
    slides.write_text("PATIENT,FILENAME\nc,c1.h5\nc,c1.h5\nb,b1.h5\n")
    with pytest.raises(InputError, match=rf"^{slides}, line 3: slide 'c1.h5' is listed twice"):
        read_cohort(clini, columns, slide_table=slides)
    slides.write_text("PATIENT,FILENAME\nc,c1.h5\nb,\n")
    with pytest.raises(InputError, match=rf"^{slides}, line 3: column 'FILENAME' is empty"):
        read_cohort(clini, columns, slide_table=slides)


def test_hints_name_the_flags(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("patient_id,time,censorship\na,1,0\nb,2,1\n")
    with pytest.raises(InputError, match=r"\(--censor-col censorship\)"):
        read_cohort(table, Columns(event="censorship"))


def test_json_outputs_hold_null_not_nan(tmp_path):
    write_json(tmp_path / "m.json", {"c": float("nan"), "per_fold": [0.5, np.nan, np.inf]})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"c": None, "per_fold": [0.5, None, None]}


def test_a_warning_is_shown_whole_not_cut_at_its_first_line():
    from cli.main import first_paragraph

    message = (
        "Column age have very low variance when conditioned on death event present or not.\n"
        "This may harm convergence.\n\n>>> events = df['event'].astype(bool)"
    )
    assert first_paragraph(message) == (
        "Column age have very low variance when conditioned on death event present or not. "
        "This may harm convergence."
    )


def test_an_unreachable_hub_fails_at_once_and_names_weights(monkeypatch):
    pytest.importorskip("timm")
    from huggingface_hub import constants

    import feature_extraction.encoding.weights as weights_module

    seen = []
    monkeypatch.setattr(weights_module, "hub_reachable", lambda *a, **k: False)

    def create_model(name, pretrained=False, **kwargs):
        seen.append(constants.HF_HUB_OFFLINE)
        raise OSError("We cannot find the requested files in the local cache.")

    import timm

    monkeypatch.setattr(timm, "create_model", create_model)
    saved = constants.HF_HUB_OFFLINE
    start = time.monotonic()
    with pytest.raises(InputError, match="--weights"):
        weights_module.create_timm("resnet50.tv_in1k", None)
    assert time.monotonic() - start < 5.0
    assert seen == [True]  # the hub library read its local cache only
    assert constants.HF_HUB_OFFLINE == saved


def test_predict_for_some_patients_ignores_the_others_missing_files(sim, tmp_path):
    from mil_crcrs.data.inputs import open_inputs

    truth = pd.read_csv(sim.clinical_csv, dtype={"patient_id": str, "slide_id": str})
    extra = pd.DataFrame(
        [{**truth.iloc[0].to_dict(), "patient_id": "GONE", "slide_id": "no-such-slide"}]
    )
    table = tmp_path / "cohort.csv"
    pd.concat([truth, extra]).to_csv(table, index=False)
    wanted = truth["patient_id"].iloc[0]
    inputs = open_inputs(sim.features_dir, table, patients=[wanted])
    assert inputs.cohort.patient_ids == [wanted]
    with pytest.raises(InputError, match="no-such-slide"):
        open_inputs(sim.features_dir, table)


def test_heatmap_and_report_write_a_run_log_and_heatmap_progress(sim, tmp_path):
    fit = run(
        "fit", "--features", sim.features_dir, "--clinical", sim.clinical_csv, "--out",
        tmp_path / "model", *FAST,
    )  # fmt: skip
    assert fit.exit_code == 0, fit.output
    patients = ",".join(pd.read_csv(sim.clinical_csv)["patient_id"].unique()[:2])
    out = tmp_path / "heatmaps"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run(
            "heatmap", "--model", tmp_path / "model", "--features", sim.features_dir,
            "--clinical", sim.clinical_csv, "--patients", patients, "--out", out,
            "--device", "cpu", "--max-side", "64", "--top-k", "0",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("patient ")]
    assert len(lines) == 2 and "2/2" in lines[1], result.stderr
    log = (out / "run.log").read_text()
    assert "patient " in log and "images for 2 patient(s)" in log
    quiet = run(
        "heatmap", "--model", tmp_path / "model", "--features", sim.features_dir, "--clinical",
        sim.clinical_csv, "--patients", patients, "--out", tmp_path / "quiet", "--device", "cpu",
        "--no-progress", "--max-side", "64", "--top-k", "0",
    )  # fmt: skip
    assert quiet.exit_code == 0 and "patient " not in quiet.stderr
    times = pd.read_csv(sim.clinical_csv)["time"]  # days
    horizon = f"{times.median() / 365.25:.1f}"
    report = run(
        "report", "--predictions", tmp_path / "model" / "oof_predictions.csv", "--clinical",
        sim.clinical_csv, "--covariates", "age", "--bootstrap", "0", "--horizons", horizon,
        "--out", tmp_path / "report",
    )  # fmt: skip
    assert report.exit_code == 0, report.output
    report_log = (tmp_path / "report" / "run.log").read_text()
    assert "read in days (the unit of the model in" in report_log
