"""`crcrs report` end to end on synthetic cohorts, and its bad-input messages."""

from __future__ import annotations

import base64
import errno
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from lifelines import CoxPHFitter
from lifelines.statistics import logrank_test
from sksurv.metrics import concordance_index_censored

from cli.main import cli
from mil_crcrs.data.cohort import DataWarning
from mil_crcrs.errors import InputError
from mil_crcrs.stats.report.build import build_report
from mil_crcrs.stats.report.inputs import load_patients, read_predictions, usable_horizons
from mil_crcrs.stats.report.settings import ReportSettings

YEAR = 365.25
FAKE_PNG = b"\x89PNG\r\n\x1a\n" + b"heatmap-bytes"


def synthetic_cohort(n: int, seed: int, prefix: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions and clinical table; the hazard rises with the score, stage and grade."""
    rng = np.random.default_rng(seed)
    stage = rng.choice(["I", "II", "III"], n, p=[0.3, 0.4, 0.3])
    grade = rng.choice([1, 2, 3], n)
    age = rng.normal(65, 10, n).round()
    score = rng.normal(0, 1, n)
    lp = 0.8 * score + np.select([stage == "II", stage == "III"], [0.5, 1.0], 0) + 0.3 * grade
    death = rng.exponential(1 / (0.12 * np.exp(lp))) * YEAR
    censor = rng.uniform(3, 8, n) * YEAR
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    crcrs = score + rng.normal(0, 0.5, n)
    pred = pd.DataFrame(
        {
            "patient_id": ids,
            "crcrs": crcrs,
            "risk_group": np.where(crcrs > np.median(crcrs), "high", "low"),
        }
    )
    clin = pd.DataFrame(
        {
            "pid": ids,
            "os_days": np.minimum(death, censor).round(),
            "dead": (death <= censor).astype(int),
            "stage": stage,
            "grade": grade,
            "age": age,
        }
    )
    return pred, clin


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_inputs")
    out = {}
    for role, n, seed, prefix in (("train", 120, 0, "T"), ("valid", 100, 1, "V")):
        pred, clin = synthetic_cohort(n, seed, prefix)
        out[f"{role}_pred"] = root / f"{role}_pred.csv"
        out[f"{role}_clin"] = root / f"{role}_clin.csv"
        pred.to_csv(out[f"{role}_pred"], index=False)
        clin.to_csv(out[f"{role}_clin"], index=False)
    out["image"] = root / "heatmap.png"
    out["image"].write_bytes(FAKE_PNG)
    return out


COLUMN_ARGS = ["--patient-col", "pid", "--time-col", "os_days", "--event-col", "dead"]


@pytest.fixture(scope="module")
def report_dir(files, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report") / "out"
    args = [
        "report",
        "--predictions",
        str(files["train_pred"]),
        "--clinical",
        str(files["train_clin"]),
        "--validation-predictions",
        str(files["valid_pred"]),
        "--validation-clinical",
        str(files["valid_clin"]),
        "--covariates",
        "stage,grade,age",
        "--categorical",
        "grade",
        "--horizons",
        "1,3,20",
        "--bootstrap",
        "10",
        "--seed",
        "7",
        "--image",
        str(files["image"]),
        "--out",
        str(out),
        *COLUMN_ARGS,
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # the CLI prints warnings as one line each
    assert "warning: " in result.output and "20-year horizon was dropped" in result.output
    return out, result.output


def _joined(files: dict[str, Path], role: str) -> pd.DataFrame:
    pred = pd.read_csv(files[f"{role}_pred"])
    clin = pd.read_csv(files[f"{role}_clin"])
    return pred.merge(clin, left_on="patient_id", right_on="pid")


def test_html_is_self_contained_with_images(report_dir, files):
    out, output = report_dir
    html = (out / "report.html").read_text()
    assert f"report: {out / 'report.html'}" in output
    # 2 cohorts x (KM, forest, subgroups, AUC, calibration, DCA) + nomogram, plus the heatmap
    assert html.count('src="data:image/png;base64,') == 14
    assert base64.b64encode(FAKE_PNG).decode() in html
    assert "<script" not in html and "http" not in html  # nothing fetched from elsewhere
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", html)
    assert ">nan<" not in text.lower() and "NaN" not in text and "inf<" not in text
    assert "20-year horizon was dropped" in html
    # The cohorts table stands on its side (a column per cohort, long paths wrap) and every
    # table scrolls inside its own box, so the page never overflows a narrow window.
    cohorts = re.search(r'<table class="t v">(.*?)</table>', html).group(1)
    assert re.findall(r"<tr><th>(\w+)</th><th>(\w+)</th><th>(\w+)</th>", cohorts) == [
        ("cohort", "training", "validation")
    ]
    assert cohorts.count("<tr>") == 11
    assert html.count('<div class="scroll"><table') == html.count("<table") > 10
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) == 13
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)


def test_json_is_strict_and_matches_csv(report_dir):
    out, _ = report_dir

    def no_nan(token: str):
        raise AssertionError(f"{token} in results.json")

    results = json.loads((out / "results.json").read_text(), parse_constant=no_nan)
    assert any("20-year" in w for w in results["warnings"])
    cox_csv = pd.read_csv(out / "cox.csv")
    cox_json = pd.DataFrame(results["tables"]["cox"])
    np.testing.assert_allclose(cox_json["hr"], cox_csv["hr"])
    settings = json.loads((out / "settings.json").read_text())
    assert settings["covariates"] == ["stage", "grade", "age"]
    assert settings["columns"]["patient"] == "pid" and settings["seed"] == 7
    cohorts = pd.read_csv(out / "cohorts.csv").set_index("cohort")
    assert cohorts.loc["training", "n"] == 120 and cohorts.loc["validation", "n"] == 100
    assert cohorts.loc["training", "horizons_years"] == "1, 3"


def test_numbers_agree_with_lifelines_and_sksurv(report_dir, files):
    out, _ = report_dir
    train = _joined(files, "train")
    high, low = train[train["risk_group"] == "high"], train[train["risk_group"] == "low"]
    km = pd.read_csv(out / "km_medians.csv")
    km = km[km["cohort"] == "training"]
    direct = logrank_test(high["os_days"], low["os_days"], high["dead"], low["dead"])
    assert km["logrank_p"].iloc[0] == pytest.approx(direct.p_value, rel=1e-8)
    assert km["logrank_p"].iloc[0] < 0.05

    at_risk = pd.read_csv(out / "numbers_at_risk.csv")
    first = at_risk[(at_risk["cohort"] == "training") & (at_risk["time"] == 0)].iloc[0]
    assert (first["low"], first["high"]) == (len(low), len(high))

    cox = pd.read_csv(out / "cox.csv")
    row = cox[
        (cox["cohort"] == "training")
        & (cox["model"] == "univariable")
        & (cox["term"] == "risk_group=high")
    ].iloc[0]
    # CoxPHFitter().fit(time, event, high-vs-low indicator)
    fit = CoxPHFitter().fit(
        pd.DataFrame(
            {"t": train["os_days"], "e": train["dead"], "h": (train["risk_group"] == "high") * 1.0}
        ),
        "t",
        "e",
    )
    assert row["hr"] == pytest.approx(fit.summary.loc["h", "exp(coef)"], rel=1e-6)
    grade = cox[(cox["cohort"] == "training") & (cox["variable"] == "grade")]
    assert set(grade["level"].astype(str)) == {"1", "2", "3"} - {str(grade["reference"].iloc[0])}

    disc = pd.read_csv(out / "discrimination.csv")
    c = disc[
        (disc["cohort"] == "training")
        & (disc["model"] == "CRCRS")
        & (disc["metric"] == "harrell_c")
    ].iloc[0]
    expected = concordance_index_censored(
        train["dead"].astype(bool), train["os_days"], train["crcrs"]
    )[0]
    assert c["estimate"] == pytest.approx(expected)
    assert c["ci_lower"] <= c["estimate"] <= c["ci_upper"]
    diff = pd.read_csv(out / "discrimination_difference.csv")
    assert {"training", "validation"} == set(diff["cohort"])
    assert set(disc["metric"]) == {"harrell_c", "uno_c", "auc", "ibs"}
    assert sorted(disc["horizon_years"].dropna().unique()) == [1.0, 3.0]

    calib = pd.read_csv(out / "calibration.csv")
    assert set(calib["horizon_years"]) == {1.0, 3.0}
    assert calib.groupby(["cohort", "horizon_years"])["n"].sum().tolist() == [120, 120, 100, 100]
    dca = pd.read_csv(out / "decision_curve.csv")
    assert set(dca["horizon_years"]) == {1.0}  # the middle of the usable horizons 1 and 3
    assert np.isfinite(dca["net_benefit"]).all()


# --- bad input -----------------------------------------------------------------------------------


def _settings(**kwargs) -> ReportSettings:
    from mil_crcrs.data.tables import Columns

    base = dict(
        covariates=("stage", "age"),
        columns=Columns("pid", "slide_id", "os_days", "dead"),
        n_bootstrap=0,
    )
    base.update(kwargs)
    return ReportSettings(**base)


def _stage_only_args(predictions: Path, clinical: Path, out: Path, *flags: str) -> list[str]:
    """``crcrs report`` arguments of a one-covariate (stage) report."""
    return [
        "report",
        "--predictions",
        str(predictions),
        "--clinical",
        str(clinical),
        "--covariates",
        "stage",
        "--out",
        str(out),
        *flags,
        *COLUMN_ARGS,
    ]


def test_no_patient_in_common_is_one_line_exit_2(files, tmp_path):
    args = _stage_only_args(files["valid_pred"], files["train_clin"], tmp_path / "o")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "no patient in common" in result.output
    assert result.output.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_missing_covariate_is_an_input_error(files, tmp_path):
    with pytest.raises(InputError, match="covariate\\(s\\) 'T' not found"):
        build_report(
            files["train_pred"], files["train_clin"], tmp_path, _settings(covariates=("T", "age"))
        )


def test_constant_covariate_is_an_input_error(files, tmp_path):
    clin = pd.read_csv(files["train_clin"]).assign(site="A")
    with pytest.raises(InputError, match="'site' is constant"):
        build_report(files["train_pred"], clin, tmp_path, _settings(covariates=("site", "age")))


def test_horizons_beyond_follow_up_are_an_input_error(files, tmp_path):
    with pytest.raises(InputError, match="no usable horizon among 10, 20 years"):
        build_report(
            files["train_pred"], files["train_clin"], tmp_path, _settings(horizons_years=(10, 20))
        )


def test_usable_horizons_need_events_and_patients_beyond():
    time = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    event = np.array([1, 1, 1, 0, 1, 0, 1, 1, 0, 0])
    kept, reasons = usable_horizons(time, event, [2.5, 5.5, 9.5], min_events=3)
    assert kept == [5.5]
    assert reasons[0].startswith("only 2 event(s) by then")
    assert reasons[1].startswith("only 1 patient(s) followed beyond it")


def test_validation_inputs_go_together(files, tmp_path):
    with pytest.raises(InputError, match="give both or neither"):
        build_report(
            files["train_pred"],
            files["train_clin"],
            tmp_path,
            _settings(),
            validation_predictions=files["valid_pred"],
        )


def test_missing_extra_image_is_an_input_error(files, tmp_path):
    with pytest.raises(InputError, match="no such image file"):
        build_report(
            files["train_pred"],
            files["train_clin"],
            tmp_path,
            _settings(),
            extra_images=[tmp_path / "absent.png"],
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("patient_id,crcrs,risk_group\na,0.1,high\nb,x,low\n", "line 3: column 'crcrs'"),
        ("patient_id,crcrs,risk_group\na,0.1,medium\n", "line 2: column 'risk_group'"),
        ("patient_id,crcrs,risk_group\na,0.1,high\na,0.2,low\n", "duplicate patient_id 'a'"),
        ("patient_id,score\na,0.1\n", "missing column\\(s\\) 'crcrs', 'risk_group'"),
    ],
)
def test_bad_predictions(tmp_path, text, message):
    path = tmp_path / "pred.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_predictions(path)


@pytest.mark.parametrize(
    "times, unit, hint",
    [
        ([10.0, 20, 30], "days", "--time-unit months"),
        ([60.0, 400, 600], "months", "--time-unit days"),
    ],
)
def test_implausible_follow_up_suggests_the_time_unit(times, unit, hint):
    pred = pd.DataFrame(
        {"patient_id": ["a", "b", "c"], "crcrs": [0.1, 0.5, 0.9], "risk_group": ["low"] * 3}
    )
    clin = pd.DataFrame(
        {"patient_id": ["a", "b", "c"], "time": times, "event": [1, 0, 1], "age": [60, 70, 80]}
    )
    _, _, notes = load_patients(pred, clin, ReportSettings(covariates=("age",), time_unit=unit))
    assert len(notes) == 1 and "the longest follow-up is" in notes[0] and hint in notes[0]


def test_outcome_falls_back_to_the_predictions(tmp_path):
    pred = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c"],
            "crcrs": [0.1, 0.5, 0.9],
            "risk_group": ["low", "low", "high"],
            "time": [400.0, 800, 1200],
            "event": [1, 0, 1],
        }
    )
    clin = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "stage": ["I", "II", "I", "II"]})
    table, info, notes = load_patients(pred, clin, ReportSettings(covariates=("stage",)))
    assert table["time"].tolist() == [400.0, 800.0, 1200.0] and notes == []
    assert info["source"] == "<predictions>"
    with pytest.raises(InputError, match="has time and event columns"):
        load_patients(
            pred.drop(columns=["time", "event"]), clin, ReportSettings(covariates=("stage",))
        )


def test_predictions_without_clinical_rows_are_dropped_with_a_note(tmp_path):
    pred = pd.DataFrame(
        {
            "patient_id": ["a", "b", "z"],
            "crcrs": [0.1, 0.5, 0.9],
            "risk_group": ["low", "high", "high"],
        }
    )
    clin = pd.DataFrame(
        {"patient_id": ["a", "b"], "time": [5.0, 6.0], "event": [1, 1], "stage": ["I", "II"]}
    )
    table, _, notes = load_patients(pred, clin, ReportSettings(covariates=("stage",)))
    assert table.index.tolist() == ["a", "b"]
    assert "1 of 3 patients" in notes[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(covariates=()), "at least one clinical covariate"),
        (dict(covariates=("crcrs",)), "'crcrs' is not a clinical covariate"),
        (dict(covariates=("a", "a")), "given twice: a"),
        (dict(covariates=("a",), categorical=("b",)), "categorical covariate\\(s\\) b"),
        (dict(covariates=("a",), horizons_years=(0,)), "horizons_years must be positive"),
        (dict(covariates=("a",), n_bootstrap=-1), "bootstrap"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        ReportSettings(**kwargs)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--horizons", "0,3"], "error: --horizons must be positive years"),
        (["--dca-horizon", "-1"], "error: --dca-horizon must be positive years"),
        (["--categorical", "T"], "error: --categorical covariate(s) T are not among"),
    ],
)
def test_bad_settings_name_the_flag(files, tmp_path, flags, message):
    # The library names the ReportSettings field (horizons_years); the CLI names its flag.
    args = _stage_only_args(files["train_pred"], files["train_clin"], tmp_path / "o", *flags)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.startswith(message) and result.output.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_hostile_ids_and_names_come_out_escaped(files, tmp_path):
    # Patient ids, a covariate name, its levels and an image named after a slide, all carrying
    # markup: the page must show them as text, never run or parse them.
    evil = "<script>alert(1)</script>"
    pred = pd.read_csv(files["train_pred"])
    clin = pd.read_csv(files["train_clin"])
    pred["patient_id"] = evil + pred["patient_id"]
    clin["pid"] = evil + clin["pid"]
    clin = clin.rename(columns={"stage": f"stage{evil}"})
    clin[f"stage{evil}"] = clin[f"stage{evil}"] + "<u>"
    stray = pd.DataFrame({"patient_id": [f"{evil}stray"], "crcrs": [0.0], "risk_group": ["low"]})
    pd.concat([pred, stray]).to_csv(tmp_path / "pred.csv", index=False)
    clin.to_csv(tmp_path / "clin.csv", index=False)
    image = tmp_path / f"slide{evil.replace('/', '_')}.png"
    image.write_bytes(FAKE_PNG)
    settings = _settings(covariates=(f"stage{evil}", "age"))
    with pytest.warns(DataWarning, match="no clinical row"):
        report = build_report(
            tmp_path / "pred.csv",
            tmp_path / "clin.csv",
            tmp_path / "out",
            settings,
            extra_images=[image],
        )
    page = report.html.read_text()
    assert "<script" not in page and "<u>" not in page
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # shown, escaped
    assert "stage&lt;script&gt;" in text and "&lt;u&gt;" in text


def test_dollar_signs_in_names_and_levels_are_drawn_as_written(files, tmp_path):
    """matplotlib reads ``$...$`` as maths: a covariate named ``$\\cost$`` and a level
    ``$\\foo$`` (unknown commands to it) ended the report in a traceback."""
    clinical = pd.read_csv(files["train_clin"])
    clinical = clinical.rename(columns={"stage": r"$\cost$"})
    clinical[r"$\cost$"] = clinical[r"$\cost$"].map({"I": "$I$", "II": r"$\foo$", "III": "II$"})
    path = tmp_path / "dollars.csv"
    clinical.to_csv(path, index=False)
    out = tmp_path / "out"
    args = _stage_only_args(files["train_pred"], path, out, "--bootstrap", "0")
    args[args.index("stage")] = r"$\cost$"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and list(out.glob("figures/*.png"))
    assert r"$\foo$" in (out / "report.html").read_text()


def test_a_failed_rerun_leaves_the_previous_report_whole_and_a_rerun_replaces_it(
    files, tmp_path, monkeypatch
):
    """A killed re-run of ``report`` left old and new files side by side (``report.html`` said
    one hazard ratio, ``cox.csv`` beside it another). The folder is now one run's, whole."""
    from mil_crcrs.atomic import INCOMPLETE_MARK

    out = tmp_path / "report"
    args = _stage_only_args(files["train_pred"], files["train_clin"], out, "--bootstrap", "0")
    assert CliRunner().invoke(cli, args).exit_code == 0
    (out / "my_notes.txt").write_text("mine")
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = []

    def dies_midway(path, frame, index=False):
        calls.append(path)
        if len(calls) == 3:  # the disk fills after two tables were written
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        frame.to_csv(path, index=index)

    other = pd.read_csv(files["train_pred"])
    other["crcrs"] = -other["crcrs"]  # a re-run on other scores: the tables differ
    other["risk_group"] = other["risk_group"].map({"high": "low", "low": "high"})
    other.to_csv(tmp_path / "other.csv", index=False)
    rerun = _stage_only_args(tmp_path / "other.csv", files["train_clin"], out, "--bootstrap", "0")
    monkeypatch.setattr("mil_crcrs.stats.report.build.write_csv", dies_midway)
    assert CliRunner().invoke(cli, rerun).exit_code == 2
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    assert not [p for p in tmp_path.iterdir() if INCOMPLETE_MARK in p.name]
    monkeypatch.undo()
    (out / "stale.csv").write_text("not listed by the last run: a user's file")
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "stale.csv").exists()
    listed = json.loads((out / "manifest.json").read_text())
    kept = ("my_notes.txt", "stale.csv", "manifest.json", "run.log")  # run.log: RunLog's
    assert listed == sorted(p.name for p in out.iterdir() if p.name not in kept)
    assert "report.html" in listed and "figures" in listed
