"""``crcrs extract --coords DIR``: tiles from a lab's own coordinates files (CLAM, TRIDENT, any h5).

Slides are the small tissue TIFFs of ``tests/helpers.py`` (0.5 um/px, 128-px tissue cells);
the encoder is the mean colour of each tile, so features can be checked against OpenSlide reads.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

pytest.importorskip("openslide")

from cli.main import cli  # noqa: E402
from feature_extraction.reading.slides import Slide  # noqa: E402
from feature_extraction.running.pipeline import extract  # noqa: E402
from mil_crcrs.data.store import read_bag  # noqa: E402
from tests.helpers import CELLS, FAST, N_CELLS, TINY_RUN, write_tissue_slide  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

MEAN = replace(
    FAST, encoder="test_slow_mean", feature_dtype="float32", batch_size=64, reader="openslide"
)


def _write_coords(path: Path, coords: np.ndarray, **attrs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("coords", data=np.asarray(coords, np.int64))
        dataset.attrs.update(attrs)
    return path


def _mean_colours(slide_path: Path, coords: np.ndarray, size0: int, size: int) -> np.ndarray:
    from feature_extraction.reading.loader import read_block_openslide

    with Slide(slide_path) as slide:
        tiles = [read_block_openslide(slide, xy[None], size0, size)[0] for xy in coords]
    return np.stack([t.reshape(-1, 3).mean(0) / 255 for t in tiles])


@pytest.fixture
def slides(tmp_path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(2):
        write_tissue_slide(folder / f"slide{i}.tiff", compression="jpeg")
    return folder


def test_clam_patches_are_the_tiles_extracted(slides, tmp_path):
    # CLAM: patches/<slide>.h5, 128-px patches at level 0, a lattice starting at (64, 64)
    cells = np.argwhere(CELLS)[:9]
    coords = cells[:, ::-1] * 128 + 64
    for i in range(2):
        _write_coords(tmp_path / "clam" / "patches" / f"slide{i}.h5", coords,
                      patch_size=128, patch_level=0)  # fmt: skip
    result = extract([slides], tmp_path / "out", replace(MEAN, coords_dir=str(tmp_path / "clam")))
    assert result.done == ["slide0", "slide1"] and result.n_tiles == 18
    bag = read_bag(tmp_path / "out" / "slide0.h5")
    order = np.lexsort(bag.coords.T[::-1])
    assert np.array_equal(bag.coords[order], coords[np.lexsort(coords.T[::-1])])
    assert bag.info.tile_size_level0 == 128 and bag.info.target_mpp == pytest.approx(2.0)
    expected = _mean_colours(slides / "slide0.tiff", bag.coords, 128, 32)
    np.testing.assert_allclose(bag.features, expected, atol=1e-5)
    # the folder is hashed apart from a segmented one
    plain = extract([slides / "slide0.tiff"], tmp_path / "plain", MEAN)
    assert plain.settings_hash != result.settings_hash and plain.n_tiles == N_CELLS


def test_footprint_from_patch_level_or_trident_and_tiles_off_a_lattice(slides, tmp_path):
    # TRIDENT names: <slide>_patches.h5 with patch_size_level0; tiles overlapping (step 100)
    coords = np.array([[140, 150], [240, 150], [340, 250], [433, 371]])
    _write_coords(tmp_path / "trident" / "slide0_patches.h5", coords, patch_size_level0=256)
    one = [slides / "slide0.tiff"]
    extract(one, tmp_path / "t", replace(MEAN, coords_dir=str(tmp_path / "trident")))
    bag = read_bag(tmp_path / "t" / "slide0.h5")
    assert bag.info.tile_size_level0 == 256 and bag.info.target_mpp == pytest.approx(4.0)
    np.testing.assert_allclose(bag.features, _mean_colours(one[0], bag.coords, 256, 32), atol=1e-5)
    # CLAM at level 1 (downsample 2): 64-px patches there are 128 level-0 px
    _write_coords(tmp_path / "lvl" / "slide0.h5", coords, patch_size=64, patch_level=1)
    extract(one, tmp_path / "l", replace(MEAN, coords_dir=str(tmp_path / "lvl")))
    assert read_bag(tmp_path / "l" / "slide0.h5").info.tile_size_level0 == 128


def test_missing_or_bad_coordinates_fail_that_slide_only(slides, tmp_path):
    coords = np.argwhere(CELLS)[:4, ::-1] * 128
    _write_coords(tmp_path / "c" / "slide0.h5", coords + 10_000)  # off the slide
    result = extract([slides], tmp_path / "out", replace(MEAN, coords_dir=str(tmp_path / "c")))
    assert sorted(result.failed) == ["slide0", "slide1"]
    report = pd.read_csv(tmp_path / "out" / "extract_errors.csv").set_index("slide_id")
    assert report.loc["slide0", "reason"] == "bad_coords"
    assert "leave the 1024x768-px slide" in report.loc["slide0", "message"]
    assert report.loc["slide1", "reason"] == "no_coords"
    _write_coords(tmp_path / "c" / "slide0.h5", np.r_[coords, coords[:1]])
    _write_coords(tmp_path / "c" / "slide1.h5", coords)
    again = extract([slides], tmp_path / "out", replace(MEAN, coords_dir=str(tmp_path / "c")))
    assert again.done == ["slide1"] and "lists some tiles twice" in again.failed["slide0"]


def test_cli_coords_option(slides, tmp_path):
    coords = np.argwhere(CELLS)[:5, ::-1] * 128
    _write_coords(tmp_path / "c" / "slide0.h5", coords)
    args = ["extract", str(slides / "slide0.tiff"), "--out", str(tmp_path / "out"), *TINY_RUN]
    result = CliRunner().invoke(cli, [*args, "--coords", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "1 extracted (5 tiles" in result.output
    missing = CliRunner().invoke(cli, [*args, "--coords", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
