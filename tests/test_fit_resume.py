"""A fit that survives a kill: the atomic model directory, fold checkpoints and ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mil_crcrs.train.crossval as crossval
from cli.main import cli
from mil_crcrs import fit, load_model
from mil_crcrs.errors import InputError
from mil_crcrs.train.checkpoints import MANIFEST_NAME, checkpoint_folder
from tests.helpers import tiny, write_cohort

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

ROOT = Path(__file__).resolve().parents[1]
TRAIN_MODEL = crossval.train_model


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("resume"), n=30)


@pytest.fixture(scope="module")
def uninterrupted(cohort):
    features, clinical = cohort
    return fit(features, clinical, tiny())


def assert_bitwise_equal(a, b) -> None:
    """Two fitted models: the same weights, offsets, out-of-fold scores, cutoff and metrics."""
    assert len(a.fold_models) == len(b.fold_models)
    for ma, mb in zip(a.fold_models, b.fold_models, strict=True):
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.offsets == b.offsets
    assert np.array_equal(a.oof_predictions["crcrs"], b.oof_predictions["crcrs"])
    assert a.cutoff == b.cutoff
    # as metrics.json writes them (NaN, e.g. an unused validation loss, is not == itself)
    assert json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)


class Killed(BaseException):
    """Stands in for SIGKILL inside the process: nothing after it runs."""


def _killed_after(n_folds: int, features, clinical, folder, monkeypatch) -> None:
    """A fit with checkpoints in ``folder`` that dies while training fold ``n_folds + 1``."""
    _dies_after(n_folds, monkeypatch)
    with pytest.raises(Killed):
        fit(features, clinical, tiny(), checkpoints=folder)


def _dies_after(n_folds: int, monkeypatch) -> dict[str, int]:
    """Make ``fit`` die when training fold ``n_folds + 1``; count the folds trained."""
    calls = {"n": 0}

    def train_model(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_folds:
            raise Killed
        return TRAIN_MODEL(*args, **kwargs)

    monkeypatch.setattr(crossval, "train_model", train_model)
    return calls


def test_resume_trains_only_missing_folds_and_is_bitwise_identical(
    tmp_path, cohort, uninterrupted, monkeypatch
):
    features, clinical = cohort
    folder = tmp_path / "ckpt"
    _killed_after(2, features, clinical, folder, monkeypatch)
    assert sorted(p.name for p in folder.glob("seed*_fold*")) == [
        "seed3_fold1.json",
        "seed3_fold1.pt",
        "seed3_fold2.json",
        "seed3_fold2.pt",
    ]
    calls = _dies_after(99, monkeypatch)
    resumed = fit(features, clinical, tiny(progress=True), checkpoints=folder, resume=True)
    assert calls["n"] == 1  # only fold 3 was trained again; progress is not hashed
    assert_bitwise_equal(resumed, uninterrupted)
    # the saved directory of a resumed fit predicts exactly like the uninterrupted one
    resumed.save(tmp_path / "model")
    a = load_model(tmp_path / "model").predict(features, clinical, device="cpu")
    b = uninterrupted.predict(features, clinical, device="cpu")
    assert a.equals(b)


def test_resume_refuses_checkpoints_of_another_fit(tmp_path, cohort, monkeypatch):
    features, clinical = cohort
    folder = tmp_path / "ckpt"
    _killed_after(1, features, clinical, folder, monkeypatch)
    with pytest.raises(InputError, match=r"ckpt: checkpoints of a fit with other settings"):
        fit(features, clinical, tiny(lr=2e-2), checkpoints=folder, resume=True)
    # without --resume the old checkpoints are cleared, not mixed in
    calls = _dies_after(99, monkeypatch)
    fit(features, clinical, tiny(lr=2e-2), checkpoints=folder)
    assert calls["n"] == 3
    record = json.loads((folder / MANIFEST_NAME).read_text())["record"]
    assert record["settings"]["lr"] == 2e-2


def test_changed_feature_files_are_another_fit(tmp_path, cohort, monkeypatch):
    features, clinical = cohort
    folder = tmp_path / "ckpt"
    _killed_after(1, features, clinical, folder, monkeypatch)
    first = sorted(Path(features).glob("*.h5"))[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    with pytest.raises(InputError, match="feature_files_sha256"):
        fit(features, clinical, tiny(), checkpoints=folder, resume=True)


def test_a_damaged_checkpoint_is_trained_again(tmp_path, cohort, uninterrupted, monkeypatch):
    features, clinical = cohort
    folder = tmp_path / "ckpt"
    _killed_after(2, features, clinical, folder, monkeypatch)
    weights = folder / "seed3_fold2.pt"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated
    calls = _dies_after(99, monkeypatch)
    resumed = fit(features, clinical, tiny(), checkpoints=folder, resume=True)
    assert calls["n"] == 2
    assert_bitwise_equal(resumed, uninterrupted)


def test_a_killed_save_leaves_nothing_load_would_accept(tmp_path, uninterrupted, monkeypatch):
    import mil_crcrs.model_dir as model_dir

    saves = {"n": 0}
    original = torch.save

    def dying_save(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(model_dir.torch, "save", dying_save)
    with pytest.raises(Killed):
        uninterrupted.save(tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder went too
    # a folder a SIGKILL left behind (no cleanup ran) is refused by name
    monkeypatch.setattr(model_dir.torch, "save", original)
    uninterrupted.save(tmp_path / "model")
    leftover = tmp_path / ".model.incomplete-abc123"
    (tmp_path / "model").rename(leftover)
    with pytest.raises(InputError, match="incomplete model directory"):
        load_model(leftover)
    result = CliRunner().invoke(
        cli, ["predict", "--model", str(leftover), "--features", "x", "--out", "p.csv"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_saving_over_a_model_replaces_it_and_keeps_other_files(tmp_path, cohort, uninterrupted):
    features, clinical = cohort
    target = tmp_path / "model"
    four = fit(features, clinical, tiny(folds=4))
    four.save(target)
    (target / "notes.txt").write_text("mine")
    uninterrupted.save(target)  # three folds
    assert sorted(p.name for p in target.glob("fold_*.pt")) == [f"fold_{k}.pt" for k in (1, 2, 3)]
    assert (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left aside
    assert len(load_model(target).fold_models) == 3


def _cli_fit(features: Path, clinical: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cli.main",
        "fit",
        "--features",
        str(features),
        "--clinical",
        str(clinical),
        "--out",
        str(out),
        "--folds",
        "3",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--lr",
        "1e-2",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_cli_fit_killed_by_sigkill_resumes_to_the_same_model(tmp_path, cohort):
    features, clinical = cohort
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        _cli_fit(features, clinical, tmp_path / "whole"), env=env, check=True, capture_output=True
    )
    out = tmp_path / "model"
    ckpt = checkpoint_folder(out)
    proc = subprocess.Popen(_cli_fit(features, clinical, out), env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(ckpt.glob("*_fold1.json")):
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the fit finished before it could be killed (machine too fast)")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(InputError):  # nothing predict could take for a model (run.log only)
        load_model(out)
    assert not list(out.glob("fold_*.pt"))
    done = sorted(p.name for p in ckpt.glob("*_fold*.json"))
    assert done and not any(name.endswith("fold3.json") for name in done)
    again = subprocess.run(
        _cli_fit(features, clinical, out, "--resume"), env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert not ckpt.exists()  # removed once the model is saved
    a, b = load_model(tmp_path / "whole"), load_model(out)
    for ma, mb in zip(a.fold_models, b.fold_models, strict=True):
        assert all(torch.equal(ma.state_dict()[k], mb.state_dict()[k]) for k in ma.state_dict())
    assert (out / "oof_predictions.csv").read_bytes() == (
        tmp_path / "whole" / "oof_predictions.csv"
    ).read_bytes()
