"""The file system says no: every command ends in one line naming the file, never a traceback.

A path under a regular file and a full disk (a write that raises ``ENOSPC``, and in the slow tier
a real 200 KB tmpfs) through ``fit``, ``predict``, ``report`` and ``heatmap``.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import assert_one_line_error, run


@pytest.fixture
def work(tmp_path, tiny_model) -> Path:
    shutil.copytree(tiny_model, tmp_path / "work")
    (tmp_path / "work" / "a_file").write_text("not a folder")
    table = pd.read_csv(tmp_path / "work" / "cohort.csv")
    table["age"] = 50 + 2 * table.index  # a covariate for the report
    table.to_csv(tmp_path / "work" / "cohort.csv", index=False)
    return tmp_path / "work"


def _commands(work: Path, out: Path) -> dict[str, list]:
    model, features, table = work / "model", work / "features", work / "cohort.csv"
    oof = model / "oof_predictions.csv"
    return {
        "fit": ["fit", "--features", features, "--clinical", table, "--out", out, "--folds", "2"],
        "predict": ["predict", "--model", model, "--features", features, "--out", out / "p.csv"],
        "report": ["report", "--predictions", oof, "--clinical", table, "--covariates", "age"]
        + ["--out", out],
        "heatmap": ["heatmap", "--model", model, "--features", features, "--out", out],
    }


@pytest.mark.parametrize("command", ["fit", "predict", "report", "heatmap"])
def test_an_output_under_a_regular_file_is_one_line(work, command):
    out = work / "a_file" / "out"
    result = run(*_commands(work, out)[command])
    assert_one_line_error(result, str(work / "a_file"))


def test_a_full_disk_while_writing_predictions_is_one_line(work, monkeypatch):
    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    result = run(*_commands(work, work / "out")["predict"])
    assert_one_line_error(result, "No space left on device", "free some space")
    assert not list((work / "out").glob("*.csv"))


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str):
    """Mount a tmpfs at ``folder`` (root only; the test is skipped where it is not allowed)."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)])


@pytest.fixture
def small_disk(tmp_path):
    with _tmpfs(tmp_path / "small", "size=200k") as folder:
        yield folder


@pytest.fixture
def read_only(tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=100k") as folder:
        yield folder


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fit", "predict", "report", "heatmap"])
def test_a_read_only_folder_is_one_line_before_any_work(work, read_only, command):
    result = run(*_commands(work, read_only / "out")[command])
    assert_one_line_error(result, str(read_only), "Read-only file system")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fit", "predict", "heatmap"])
def test_a_really_full_disk_is_one_line(work, small_disk, command):
    with open(small_disk / "ballast", "wb", buffering=0) as ballast:  # fill it to the last byte
        with pytest.raises(OSError):
            while True:
                ballast.write(b"\0" * 4096)
    result = run(*_commands(work, small_disk / "out")[command])
    assert_one_line_error(result, "No space left on device")


@pytest.mark.slow
def test_extract_onto_a_full_disk_is_one_line_not_a_segfault(tmp_path):
    """HDF5 segfaulted (exit 139) closing a feature file whose write failed for a full disk;
    the writer now checks the space first."""
    import sys

    pytest.importorskip("openslide")
    from benchmarks.kill_extract import ROOT, TINY, make_slides

    make_slides(tmp_path / "slides", 2)
    (tmp_path / "slides" / "bad.svs").unlink()
    command = [sys.executable, "-m", "cli.main", "extract", str(tmp_path / "slides")]
    for size in ("800k", "2m"):  # room for the QC images, not for the features
        with _tmpfs(tmp_path / size, f"size={size}") as disk:
            done = subprocess.run(
                [*command, "--out", str(disk / "f"), *TINY],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and lines[-1].startswith("error: "), done.stderr[-500:]
        assert "No space left on device" in lines[-1] and "Traceback" not in done.stderr
