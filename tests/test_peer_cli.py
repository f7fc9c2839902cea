"""``crcrs fit/predict`` on peers' tables and files, as their users have them: no hand edits."""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
from _peer_files import write_slideflow, write_stamp
from click.testing import CliRunner

from cli.main import cli
from mil_crcrs.data.cohort import DataWarning
from mil_crcrs.data.store import FeatureStore, read_info
from mil_crcrs.simulate import SimulationSettings, simulate_cohort

QUICK = ["--folds", "3", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # from conftest.py


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    settings = SimulationSettings(
        n_patients=24, tiles_per_slide=(6, 12), slides_per_patient=(1, 2), dim=8, seed=3
    )
    return simulate_cohort(tmp_path_factory.mktemp("sim"), settings)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# --------------------------------------------------------------------------------------------
# A CLAM/PORPOISE table: case_id, slide_id with extensions, survival_months, censorship


@pytest.fixture(scope="module")
def porpoise(sim, tmp_path_factory):
    truth = pd.read_csv(sim.clinical_csv)
    table = pd.DataFrame(
        {
            "case_id": truth["patient_id"],
            "slide_id": truth["slide_id"] + ".svs",
            "survival_months": truth["time"],
            "censorship": 1 - truth["event"],
            "age": truth["age"],
        }
    )
    path = tmp_path_factory.mktemp("porpoise") / "tcga_crc_all_clean.csv"
    table.to_csv(path, index=False)
    n_events = int(truth.groupby("patient_id")["event"].first().sum())
    return path, n_events


@pytest.fixture(scope="module")
def porpoise_fit(sim, porpoise, tmp_path_factory):
    path, _ = porpoise
    out = tmp_path_factory.mktemp("fit") / "model"
    result = run(
        "fit", "--features", sim.features_dir, "--clinical", path, "--out", out,
        "--patient-col", "case_id", "--time-col", "survival_months", "--time-unit", "months",
        *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, result


def test_a_porpoise_table_fits_with_events_counted_right(porpoise, porpoise_fit):
    _, n_events = porpoise
    out, result = porpoise_fit
    assert 0 < n_events < 24
    assert f"(24 patients, {n_events} events)" in result.stdout
    notes = [line for line in result.stderr.splitlines() if "censorship" in line]
    assert len(notes) == 1 and f"({n_events} events, {24 - n_events} censored" in notes[0]
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert oof.columns[0] == "case_id" and int(oof["event"].sum()) == n_events


def test_logs_written_to_a_file_hold_no_carriage_returns(porpoise_fit):
    out, result = porpoise_fit
    # stderr is not a terminal here: one plain line per fold with the time left, no bars
    assert "\r" not in result.stderr
    folds = [line for line in result.stderr.splitlines() if line.startswith("fold ")]
    assert [f.split(",")[0] for f in folds] == ["fold 1/3", "fold 2/3", "fold 3/3"]
    assert "left" in folds[0] and "left" not in folds[-1]
    log = (out / "run.log").read_text()
    assert "\r" not in log and log.endswith("finished\n")
    assert "censorship" in log and "fold 3/3" in log and "Harrell C per fold" in log


def test_no_progress_keeps_notes_and_results_but_not_fold_lines(sim, porpoise, tmp_path):
    path, _ = porpoise
    result = run(
        "fit", "--features", sim.features_dir, "--clinical", path, "--out", tmp_path / "m",
        "--patient-col", "case_id", "--time-col", "survival_months", "--no-progress",
        "--folds", "2", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fold 1/2" not in result.stderr and "censorship" in result.stderr
    assert "fold 1/2" in (tmp_path / "m" / "run.log").read_text()  # the file keeps everything


def test_predict_keeps_the_tables_id_column(sim, porpoise, porpoise_fit, tmp_path):
    path, n_events = porpoise
    out, _ = porpoise_fit
    result = run(
        "predict", "--model", out, "--features", sim.features_dir, "--clinical", path,
        "--patient-col", "case_id", "--time-col", "survival_months",
        "--out", tmp_path / "preds.csv", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert list(preds.columns) == ["case_id", "crcrs", "risk_group", "time", "event"]
    assert int(preds["event"].sum()) == n_events
    log = (tmp_path / "preds.run.log").read_text()
    assert "\r" not in log and log.endswith("finished\n")


def test_event_col_censorship_is_one_line_error(sim, porpoise, tmp_path):
    path, _ = porpoise
    result = run(
        "fit", "--features", sim.features_dir, "--clinical", path, "--out", tmp_path / "m",
        "--patient-col", "case_id", "--time-col", "survival_months",
        "--event-col", "censorship", *QUICK,
    )  # fmt: skip
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "the censoring column (--censor-col censorship)" in lines[0]
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------------------------
# STAMP and slideflow files train and predict


@pytest.fixture(scope="module")
def peer_folders(sim, tmp_path_factory):
    """The simulated cohort's features as STAMP files (with STAMP's two tables) and as
    slideflow bags without a bags_config.json (so they do not name their encoder)."""
    root = tmp_path_factory.mktemp("peers")
    store = FeatureStore(sim.features_dir)
    for sid in store.slide_ids:
        bag = store.load(sid)
        features = bag.features.astype(np.float16).astype(np.float32)  # the values STAMP keeps
        write_stamp(root / "stamp" / "ctranspath-1a2b3c", sid, features, bag.coords, 0.5)
        write_slideflow(root / "slideflow", sid, features, bag.coords, extractor=None)
    truth = pd.read_csv(sim.clinical_csv)
    per_patient = truth.groupby("patient_id", as_index=False).first()
    clini = per_patient.rename(columns={"patient_id": "PATIENT"})[["PATIENT", "time", "event"]]
    clini.to_excel(root / "clini.xlsx", index=False)
    slides = pd.DataFrame({"PATIENT": truth["patient_id"], "FILENAME": truth["slide_id"] + ".h5"})
    slides.to_csv(root / "slide.csv", index=False)
    return root


@pytest.fixture(scope="module")
def stamp_model(peer_folders):
    out = peer_folders / "model"
    result = run(
        "fit", "--features", peer_folders / "stamp" / "ctranspath-1a2b3c",
        "--clinical", peer_folders / "clini.xlsx", "--slide-table", peer_folders / "slide.csv",
        "--patient-col", "PATIENT", "--slide-col", "FILENAME", "--out", out, *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_stamp_files_and_tables_train(stamp_model):
    config = json.loads((stamp_model / "config.json").read_text())
    assert config["encoder"] == "ctranspath"
    assert config["training_cohort"]["n_patients"] == 24


def test_stamp_and_slideflow_files_predict_the_same_scores(peer_folders, stamp_model, tmp_path):
    stamp = run(
        "predict", "--model", stamp_model, "--features", peer_folders / "stamp",
        "--out", tmp_path / "stamp.csv", "--device", "cpu",
        "--attention", tmp_path / "att", "--slide-mpp", "0.5",
    )  # fmt: skip
    assert stamp.exit_code == 0, stamp.output
    assert "warning" not in stamp.stderr
    with warnings.catch_warnings():  # shown as the CLI shows them, not raised as in other tests
        warnings.simplefilter("default", DataWarning)
        slideflow = run(
            "predict", "--model", stamp_model, "--features", peer_folders / "slideflow",
            "--out", tmp_path / "sf.csv", "--device", "cpu",
            "--attention", tmp_path / "att_sf",
        )  # fmt: skip
    assert slideflow.exit_code == 0, slideflow.output
    shown = [line for line in slideflow.stderr.splitlines() if line.startswith("warning:")]
    # the bags do not name their encoder: one line naming both sides
    assert any("do not name their encoder" in w and "'ctranspath'" in w for w in shown)
    # slideflow tile centres without a tile size: the attention output says coords are unknown
    assert any("no level-0 tile coordinates" in w for w in shown)
    assert "WARNING features in" in (tmp_path / "sf.run.log").read_text()
    a = pd.read_csv(tmp_path / "stamp.csv").set_index("patient_id")
    b = pd.read_csv(tmp_path / "sf.csv").set_index("patient_id")
    assert len(a) == len(b) > 24 and set(a.index) == set(b.index)  # one patient per slide
    np.testing.assert_allclose(b.loc[a.index, "crcrs"], a["crcrs"], rtol=1e-5, atol=1e-6)
    sid = sorted(p.stem for p in (tmp_path / "att").glob("*.h5"))[0]
    with h5py.File(tmp_path / "att" / f"{sid}.h5") as f:
        assert f.attrs["coords_known"] and (f["coords"][...] >= 0).all()
    with h5py.File(tmp_path / "att_sf" / f"{sid}.h5") as f:
        assert not f.attrs["coords_known"] and (f["coords"][...] == -1).all()
        assert "tile centres" in f.attrs["coords_note"]


def test_slideflow_bags_train_with_the_encoder_supplied(sim, peer_folders, tmp_path):
    out = tmp_path / "sf_model"
    result = run(
        "fit", "--features", peer_folders / "slideflow", "--clinical", sim.clinical_csv,
        "--encoder", "ctranspath", "--tile-size", "448", "--out", out,
        "--folds", "2", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["encoder"] == "ctranspath"
    # the STAMP files name the same encoder: scored without a word
    scored = run(
        "predict", "--model", out, "--features", peer_folders / "stamp",
        "--clinical", sim.clinical_csv, "--out", tmp_path / "p.csv", "--device", "cpu",
    )  # fmt: skip
    assert scored.exit_code == 0, scored.output
    assert "warning" not in scored.stderr
    assert len(pd.read_csv(tmp_path / "p.csv")) == 24


# --------------------------------------------------------------------------------------------
# crcrs inspect


def test_inspect_a_feature_folder(peer_folders):
    result = run("inspect", peer_folders / "stamp")
    assert result.exit_code == 0, result.output
    out = result.stdout
    n = len(list((peer_folders / "stamp" / "ctranspath-1a2b3c").glob("*.h5")))
    assert f"({n} slide file(s))" in out and "layout: STAMP" in out
    assert "written by: STAMP 2.2.0" in out and "encoder: ctranspath; dim 8; float16" in out
    tiles = [read_info(p).n_tiles for p in (peer_folders / "stamp").rglob("*.h5")]
    assert (
        f"tiles per slide: min {min(tiles)}, median {np.median(tiles):g}, max {max(tiles)}" in out
    )
    assert "coordinates: microns" in out and "--slide-mpp" in out
    assert "settings hash: 1a2b3c" in out
    given = run("inspect", peer_folders / "stamp", "--slide-mpp", "0.5").stdout
    assert "cannot be placed" not in given and "tile size: 256.0 um, 512 level-0 px" in given
    flows = run("inspect", peer_folders / "slideflow", "--json")
    info = json.loads(flows.stdout)
    assert info["layout"] == {"slideflow": n} and info["encoder"] == {"not recorded": n}
    assert info["coords_level0_known"] == 0 and "tile centres" in info["coords_note"]


def test_inspect_a_model_directory(stamp_model):
    result = run("inspect", stamp_model)
    assert result.exit_code == 0, result.output
    metrics = json.loads((stamp_model / "metrics.json").read_text())
    out = result.stdout
    assert "aggregator: abmil, 3 fold models" in out
    assert "features: encoder ctranspath, dim 8" in out
    assert "clini.xlsx (24 patients" in out
    assert f"Harrell C: {metrics['harrell_c_mean']:.3f}" in out and "run.log: yes" in out


def test_inspect_nothing_there(tmp_path):
    result = run("inspect", tmp_path / "nope")
    assert result.exit_code == 2 and "no such file or folder" in result.stderr
