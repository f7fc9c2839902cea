"""No output may overwrite an input of the same run.

``predict --attention`` pointed at the feature folder used to replace the scored slides' feature
files, and ``predict --out`` equal to ``--clinical`` replaced the cohort table, both with exit 0.
Every command now compares its outputs with its inputs before it writes anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from mil_crcrs.atomic import refuse_overwrite
from mil_crcrs.errors import InputError
from tests.helpers import assert_one_line_error, run


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def work(tmp_path, tiny_model) -> Path:
    """A private copy of the tiny model, its features and its cohort table."""
    shutil.copytree(tiny_model, tmp_path / "work")
    return tmp_path / "work"


# -- the rule ---------------------------------------------------------------------------------


def test_an_output_file_may_not_be_an_input_file_however_it_is_named(tmp_path):
    table = tmp_path / "cohort.csv"
    table.write_text("patient_id\np1\n")
    (tmp_path / "alias.csv").symlink_to(table)
    os.link(table, tmp_path / "hard.csv")
    for out in (table, tmp_path / "alias.csv", tmp_path / "hard.csv", tmp_path / "." / table.name):
        with pytest.raises(InputError, match=r"--out is the input --clinical"):
            refuse_overwrite({"--out": out}, {"--clinical": table})
    refuse_overwrite({"--out": tmp_path / "other.csv"}, {"--clinical": table})


def test_an_output_may_not_replace_a_file_inside_an_input_folder(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"--out is inside the input --model"):
        refuse_overwrite({"--out": model / "config.json"}, {"--model": model})
    # a new file beside the model's own is no overwrite
    refuse_overwrite({"--out": model / "predictions.csv"}, {"--model": model})


def test_an_output_folder_may_not_be_hold_or_lie_inside_an_input(tmp_path):
    features = tmp_path / "features"
    features.mkdir()
    cases = [(features, "is"), (features / "att", "is inside"), (tmp_path, "holds")]
    for folder, how in cases:
        with pytest.raises(InputError, match=f"--attention {how} the input --features"):
            refuse_overwrite({"--attention": folder}, {"--features": features}, {"--attention"})
    refuse_overwrite({"--attention": tmp_path / "att"}, {"--features": features}, {"--attention"})
    refuse_overwrite({"--attention": None}, {"--features": features, "--x": None}, {"--attention"})


# -- the commands -----------------------------------------------------------------------------


def _predict(work: Path, *extra) -> list:
    return ["predict", "--model", work / "model", "--features", work / "features", *extra]


def test_predict_attention_into_the_feature_folder_is_refused_and_nothing_changes(work):
    before = _digest(work)
    cases = [
        (work / "features", "--attention is the input --features"),
        (work / "features" / "sub", "--attention is inside the input --features"),
        (work, "--attention holds the input --model"),  # the first input it holds
    ]
    for attention, message in cases:
        result = run(*_predict(work, "--out", work / "p.csv", "--attention", attention))
        assert_one_line_error(result, message)
        assert _digest(work) == before


def test_predict_out_onto_its_own_inputs_is_refused_and_nothing_changes(work):
    table = work / "cohort.csv"
    before = _digest(work)
    for out in (table, work / "model" / "oof_predictions.csv", work / "features" / "p1.h5"):
        result = run(*_predict(work, "--clinical", table, "--out", out))
        assert_one_line_error(result, str(out), "--out")
        assert _digest(work) == before
    # the run log beside --out may not replace an input either
    log_named = work / "p.run.log"
    log_named.write_text("patient_id,time,event\n")
    result = run(*_predict(work, "--clinical", log_named, "--out", work / "p.csv"))
    assert_one_line_error(result, "the run log", "--clinical")


def test_the_library_refuses_attention_files_over_the_features(work):
    from mil_crcrs import load_model

    before = _digest(work / "features")
    with pytest.raises(InputError, match="attention_dir is the input features"):
        load_model(work / "model").predict(work / "features", attention_dir=work / "features")
    assert _digest(work / "features") == before


def test_fit_report_and_heatmap_refuse_outputs_over_their_inputs(work):
    before = _digest(work)
    table, features = work / "cohort.csv", work / "features"
    fit = ["fit", "--features", features, "--clinical", table, "--folds", "2", "--epochs", "1"]
    assert_one_line_error(run(*fit, "--out", features), "--out is the input --features")
    assert_one_line_error(run(*fit, "--out", work), "--out holds the input --features")
    report = ["report", "--predictions", work / "model" / "oof_predictions.csv"]
    report += ["--clinical", table, "--covariates", "age"]
    assert_one_line_error(run(*report, "--out", work / "model"), "--out holds the input")
    heatmap = ["heatmap", "--model", work / "model", "--features", features]
    assert_one_line_error(run(*heatmap, "--out", features), "--out is the input --features")
    assert _digest(work) == before


def test_a_second_writer_to_one_output_folder_is_refused_while_the_first_runs(work):
    from mil_crcrs.atomic import sole_writer

    out = work / "model2"
    fit = ["fit", "--features", work / "features", "--clinical", work / "cohort.csv"]
    with sole_writer(out, "fit"):  # a fit to --out model2 is running
        result = run(*fit, "--out", out, "--folds", "2", "--epochs", "1")
        assert_one_line_error(result, str(out), "another crcrs fit is writing here")
        assert not out.exists()
    with sole_writer(out, "fit"):  # the lock is released however the holder ends
        pass


def test_leftovers_of_killed_writers_are_swept_when_the_next_writer_starts(tmp_path):
    from mil_crcrs.atomic import sole_writer

    out = tmp_path / "report"
    (tmp_path / ".report.incomplete-abc").mkdir()  # a run killed while writing
    (tmp_path / ".report.incomplete-abc" / "cox.csv").write_text("half")
    (tmp_path / ".report.old-def").mkdir()  # a swap cut short: the previous folder, aside
    (tmp_path / ".report.old-def" / "report.html").write_text("previous")
    (tmp_path / ".other.incomplete-xyz").mkdir()  # another output's: not ours to sweep
    with sole_writer(out, "report"):
        assert (out / "report.html").read_text() == "previous"  # put back, not lost
        assert not list(tmp_path.glob(".report.incomplete-*"))
    (tmp_path / ".report.old-ghi").mkdir()  # a swap that completed before the kill
    (tmp_path / ".report.old-ghi" / "report.html").write_text("older")
    with sole_writer(out, "report"):
        assert not list(tmp_path.glob(".report.old-*"))
    assert (tmp_path / ".other.incomplete-xyz").exists()
