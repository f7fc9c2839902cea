"""The peer trials again: STAMP's and TRIDENT's files and tables as their own code writes them
(``tests/_peer_files.py`` follows their sources), read with no hand edit and the right counts.

- STAMP: a feature folder whose sub-folders mirror the slide folder's, a slide table whose
  ``FILENAME`` is that relative path, status words (dead/alive, event/censored, yes/no);
- TRIDENT: ``features_<encoder>/`` as ``.h5`` and as ``.pt`` (a pickled numpy array), with a
  zero-tile file for a slide without tissue; its encoder names read as ours.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from _peer_files import stamp_feature_path, trident_coords_attrs, write_stamp, write_trident
from click.testing import CliRunner

from cli import main as cli_main
from cli.main import cli
from mil_crcrs.data._peers import CLAM, PEER_ENCODERS, STAMP, TRIDENT
from mil_crcrs.data.cohort import DataWarning, read_cohort
from mil_crcrs.data.store import FeatureStore, ReadSettings, read_info
from mil_crcrs.data.tables import Columns
from mil_crcrs.errors import InputError
from mil_crcrs.simulate import SimulationSettings, simulate_cohort

STATUS_COLUMNS = Columns(patient="PATIENT", slide="PATIENT", time="OS", event="STATUS")
QUICK = ["--folds", "3", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")  # from conftest.py


def run(*args):
    cli_main._shown.clear()  # each invocation as its own process: every warning shown
    with warnings.catch_warnings():  # the CLI shows a DataWarning as one line
        warnings.simplefilter("always", DataWarning)
        return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    settings = SimulationSettings(
        n_patients=24, tiles_per_slide=(6, 12), slides_per_patient=(1, 2), dim=8, seed=3
    )
    return simulate_cohort(tmp_path_factory.mktemp("sim"), settings)


def _truth(sim) -> tuple[pd.DataFrame, int]:
    truth = pd.read_csv(sim.clinical_csv, dtype={"patient_id": str, "slide_id": str})
    n_events = int(truth.groupby("patient_id")["event"].first().sum())
    return truth, n_events


# --------------------------------------------------------------------------------------------
# STAMP


@pytest.fixture(scope="module")
def stamp(sim, tmp_path_factory):
    """The cohort as STAMP keeps it: slides in centre sub-folders (and some at the top), their
    features mirrored under ``out/ctranspath-1a2b3c/``, a slide table of relative FILENAMEs
    and a clinical table with STAMP's status words."""
    root = tmp_path_factory.mktemp("stamp")
    wsi_dir = root / "wsi"
    truth, n_events = _truth(sim)
    store = FeatureStore(sim.features_dir)
    filenames = []
    for i, sid in enumerate(truth["slide_id"]):
        centre = ("", "centre_a", "centre_b/scanner_2")[i % 3]
        slide = wsi_dir / centre / f"{sid}.svs"
        path = stamp_feature_path(root / "out", "ctranspath", "1a2b3c", wsi_dir, slide)
        bag = store.load(sid)
        write_stamp(path.parent, sid, bag.features, bag.coords, 0.5)
        filenames.append(path.relative_to(root / "out" / "ctranspath-1a2b3c").as_posix())
    per_patient = truth.groupby("patient_id", as_index=False).first()
    clini = pd.DataFrame(
        {
            "PATIENT": per_patient["patient_id"],
            "OS_days": per_patient["time"],
            "OS_status": np.where(per_patient["event"] == 1, "dead", "alive"),
        }
    )
    clini.to_excel(root / "clini.xlsx", index=False)
    pd.DataFrame({"PATIENT": truth["patient_id"], "FILENAME": filenames}).to_csv(
        root / "slide.csv", index=False
    )
    return root, len(truth), n_events


def test_stamp_sub_folders_are_read_with_no_table(stamp):
    root, n_slides, _ = stamp
    assert any("/" in f for f in pd.read_csv(root / "slide.csv")["FILENAME"])
    assert len(FeatureStore(root / "out").slide_ids) == n_slides
    result = run("inspect", root / "out")
    assert result.exit_code == 0, result.output
    assert f"({n_slides} slide file(s))" in result.stdout


def test_stamp_tables_and_status_words_fit_with_the_right_counts(stamp, tmp_path):
    root, n_slides, n_events = stamp
    out = tmp_path / "model"
    result = run(
        "fit", "--features", root / "out", "--clinical", root / "clini.xlsx",
        "--slide-table", root / "slide.csv", "--patient-col", "PATIENT", "--slide-col",
        "FILENAME", "--time-col", "OS_days", "--event-col", "OS_status", "--time-unit", "days",
        "--out", out, *QUICK,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_patients"], metrics["n_events"]) == (24, n_events)
    config = json.loads((out / "config.json").read_text())
    assert config["training_cohort"]["n_slides"] == n_slides
    assert "dead = 1" in result.output and "alive = 0" in result.output
    scored = run(
        "predict", "--model", out, "--features", root / "out", "--out", tmp_path / "p.csv",
        "--device", "cpu",
    )  # fmt: skip
    assert scored.exit_code == 0, scored.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == n_slides  # every nested file, no table


@pytest.mark.parametrize(
    "words", [("dead", "alive"), ("event", "censored"), ("yes", "no"), ("Dead ", "ALIVE")]
)
def test_stamp_status_words(tmp_path, words):
    event, censored = words
    path = tmp_path / "clini.csv"
    path.write_text(f"PATIENT,OS,STATUS\na,1,{event}\nb,2,{censored}\nc,3,{event}\n")
    cohort = read_cohort(path, STATUS_COLUMNS)
    assert cohort.event.tolist() == [1, 0, 1]
    path.write_text("PATIENT,OS,STATUS\na,1,dead\nb,2,unknown\n")
    with pytest.raises(InputError, match="line 3: column 'STATUS' has the non-numeric value"):
        read_cohort(path, STATUS_COLUMNS)


def test_two_stamp_files_of_one_name_are_refused(tmp_path):
    feats, coords = np.ones((3, 4), np.float32), np.zeros((3, 2))
    write_stamp(tmp_path / "ctranspath-1a2b3c" / "a", "s1", feats, coords)
    write_stamp(tmp_path / "ctranspath-1a2b3c" / "b", "s1", feats, coords)
    with pytest.raises(InputError, match="two feature files for slide 's1'"):
        FeatureStore(tmp_path)


def test_stamp_tiles_are_cut_as_stamp_cuts_them(tmp_path):
    # stamp.preprocessing.tiling: tile_size_slide_px = ceil(tile_size_um / slide_mpp)
    path = write_stamp(tmp_path, "s1", np.ones((2, 4), np.float32), np.zeros((2, 2)), 0.499)
    info = read_info(path, ReadSettings(slide_mpp=0.499))
    assert info.tile_size_level0 == 514  # 256 / 0.499 = 513.03
    own = read_info(path, ReadSettings(slide_mpp=0.25, per_slide_mpp={"s1": 0.499}))
    assert own.tile_size_level0 == 514 and own.slide_mpp == 0.499


# --------------------------------------------------------------------------------------------
# TRIDENT


@pytest.fixture(scope="module")
def trident(sim, tmp_path_factory):
    """The cohort as TRIDENT's ``uni_v1`` job saves it, as .h5 and as .pt, each with a slide
    without tissue (zero tiles)."""
    root = tmp_path_factory.mktemp("trident")
    truth, n_events = _truth(sim)
    store = FeatureStore(sim.features_dir)
    for saveas in ("h5", "pt"):
        job = root / saveas / "20x_256px_0px_overlap"
        for sid in truth["slide_id"]:
            bag = store.load(sid)
            attrs = trident_coords_attrs(sid, 256, 40, 20, 40_000, 30_000)
            feats = bag.features.astype(np.float32)
            write_trident(job, sid, feats, bag.coords, attrs, "uni_v1", saveas)
        attrs = trident_coords_attrs("no-tissue", 256, 40, 20, 40_000, 30_000)
        empty = np.empty((0, 8), dtype=np.float32)
        write_trident(job, "no-tissue", empty, np.empty((0, 2)), attrs, "uni_v1", saveas)
    return root, len(truth), n_events


@pytest.fixture(scope="module")
def trident_model(sim, trident, tmp_path_factory):
    root, _, _ = trident
    out = tmp_path_factory.mktemp("trident_fit") / "model"
    features = root / "h5" / "20x_256px_0px_overlap" / "features_uni_v1"
    result = run(
        "fit", "--features", features, "--clinical", sim.clinical_csv, "--out", out, *QUICK
    )
    assert result.exit_code == 0, result.output
    return out


def test_trident_h5_and_pt_score_the_same_and_skip_the_empty_slide(
    trident, trident_model, tmp_path
):
    root, n_slides, n_events = trident
    metrics = json.loads((trident_model / "metrics.json").read_text())
    assert metrics["n_events"] == n_events
    assert json.loads((trident_model / "config.json").read_text())["encoder"] == "uni"
    tables = {}
    for saveas in ("h5", "pt"):
        job = root / saveas
        result = run(
            "predict", "--model", trident_model, "--features", job, "--out",
            tmp_path / f"{saveas}.csv", "--device", "cpu",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        warned = [line for line in result.stderr.splitlines() if "zero tiles" in line]
        assert len(warned) == 1 and "no-tissue" in warned[0], result.stderr
        tables[saveas] = pd.read_csv(tmp_path / f"{saveas}.csv").set_index("patient_id")
        assert len(tables[saveas]) == n_slides
        inspected = run("inspect", job)
        assert inspected.exit_code == 0, inspected.output
        assert f"({n_slides} slide file(s))" in inspected.stdout
        assert inspected.stderr.count("zero tiles") == 1
    np.testing.assert_allclose(tables["h5"]["crcrs"], tables["pt"]["crcrs"].loc[tables["h5"].index])


def test_a_pt_file_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    folder = tmp_path / "features_uni_v1"
    folder.mkdir()
    torch.save(Payload(), folder / "s1.pt")
    with pytest.raises(InputError, match="not a readable torch tensor file"):
        FeatureStore(folder).load("s1")
    assert not (tmp_path / "ran").exists()


def test_a_numpy_1_pt_file_is_read(tmp_path):
    # numpy 1 pickles its arrays with numpy.core.multiarray._reconstruct (numpy 2: numpy._core).
    from numpy._core import multiarray

    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    attrs = trident_coords_attrs("s1", 256, 40, 20, 4000, 3000)
    module = multiarray._reconstruct.__module__
    multiarray._reconstruct.__module__ = "numpy.core.multiarray"
    try:
        with warnings.catch_warnings():  # numpy.core is numpy 2's deprecated alias
            warnings.simplefilter("ignore", DeprecationWarning)
            path = write_trident(tmp_path, "s1", features, np.zeros((3, 2)), attrs, saveas="pt")
    finally:
        multiarray._reconstruct.__module__ = module
    assert b"numpy.core.multiarray" in path.read_bytes()
    np.testing.assert_array_equal(FeatureStore(tmp_path).load("s1").features, features)


def test_every_peer_encoder_name_is_mapped():
    # The lists as each peer's source has them.
    trident = (
        "conch_v1 conch_v15 uni_v1 uni_v2 ctranspath phikon phikon_v2 resnet50 keep gigapath "
        "virchow virchow2 hoptimus0 hoptimus1 h0-mini musk openmidnight gpfm hibou_l kaiko-vitb8 "
        "kaiko-vitb16 kaiko-vits8 kaiko-vits16 kaiko-vitl14 lunit-vits8 genbio-pathfm gemma4-e4b "
        "gemma4-26b"
    ).split()
    clam = ["resnet50_trunc", "uni_v1", "conch_v1", "conch_v1_5"]
    stamp_names = (
        "ctranspath chief-ctranspath conch conch1_5 uni uni2 dino-bloom gigapath h-optimus-0 "
        "h-optimus-1 virchow virchow-full virchow2 musk mstar plip keep ticon empty red-dino"
    ).split()
    for tool, names in ((TRIDENT, trident), (CLAM, clam), (STAMP, stamp_names)):
        assert set(names) <= set(PEER_ENCODERS[tool]), tool
    assert PEER_ENCODERS[TRIDENT]["resnet50"] == "resnet50_trunc"
    assert PEER_ENCODERS[TRIDENT]["uni_v2"] == PEER_ENCODERS[STAMP]["uni2"] == "uni2-h"
    from feature_extraction.encoding.encoders import list_encoders

    ours = set(list_encoders())
    assert {v for table in PEER_ENCODERS.values() for v in table.values() if v} <= ours


def test_two_stamp_extractors_are_two_folders_not_one_tree(tmp_path):
    feats, coords = np.ones((3, 4), np.float32), np.zeros((3, 2))
    write_stamp(tmp_path / "ctranspath-1a2b3c", "s1", feats, coords, extractor="ctranspath")
    write_stamp(tmp_path / "uni-1a2b3c", "s1", feats, coords, extractor="uni")
    with pytest.raises(InputError, match="feature files in several folders"):
        FeatureStore(tmp_path)
    assert FeatureStore(tmp_path / "uni-1a2b3c").info("s1").encoder == "uni"
