"""Extraction under repeated SIGKILL and racing itself (slow tier; ``benchmarks/kill_extract.py``).

Every process is a real ``crcrs extract``; see the benchmark script's docstring for the design.
"""

from __future__ import annotations

import pytest

pytest.importorskip("openslide")
pytest.importorskip("timm")

from benchmarks.kill_extract import kill_run, make_slides, race, reference  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """8 slides (and a corrupt one) with the uninterrupted run's folder."""
    root = tmp_path_factory.mktemp("reliability")
    ids = make_slides(root / "slides", 8)
    ref = root / "ref"
    ref.mkdir()
    (ref / ".seconds").write_text(str(reference(root / "slides", ref)))
    return root, ids, ref


def test_two_shards_killed_20_times_end_identical_to_an_uninterrupted_run(job, tmp_path):
    root, ids, ref = job
    result = kill_run(root / "slides", ref, tmp_path / "out", ids, kills=20, seed=1)
    check = result["check"]
    assert result["kills"] >= 20
    assert check.files_ok, check.problems  # every slide's file exactly once
    assert check.same_features, check.problems  # same coords, features within float tolerance
    assert check.leftovers == []  # no temporary file, no claim
    assert check.errors_report_ok, check.problems  # the corrupt slide, and only it
    assert result["final_exit_codes"] == [0, 2]  # the shard with the corrupt slide says so


def test_two_unsharded_processes_on_one_folder_never_clash(job, tmp_path):
    root, ids, ref = job
    slides = tmp_path / "slides"
    slides.mkdir()
    for sid in ids[:7]:
        (slides / f"{sid}.tiff").symlink_to(root / "slides" / f"{sid}.tiff")
    (slides / "bad.svs").write_bytes(b"not a slide")
    for i in range(3):
        result = race(slides, ref, tmp_path / f"out{i}", ids[:7])
        assert result["tracebacks"] == 0
        assert result["check"].ok, result["check"].problems + result["check"].leftovers
        # every slide encoded once: what one process did not extract, the other did
        assert result["duplicated"] == 0 and sum(result["extracted"]) == 7
