"""Attention heatmaps from features (mil_crcrs.explain): painting, normalisation, selection, AUROC."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mil_crcrs.attention_checks import attention_auroc, planted_auroc
from mil_crcrs.data.store import read_bag, read_info, write_bag
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.explain.figures import heatmap_figure, tile_gallery_figure
from mil_crcrs.explain.paint import (
    ValueScale,
    blank_canvas,
    canvas_shape,
    overlay,
    paint_tiles,
    smooth_map,
    value_scale,
)
from mil_crcrs.explain.render import render_heatmap, slide_heatmaps
from mil_crcrs.explain.scores import TileScores, select_tiles
from mil_crcrs.explain.settings import HeatmapSettings
from mil_crcrs.figures import write_png
from mil_crcrs.fitting import fit
from mil_crcrs.models import create_model
from mil_crcrs.simulate import SimulationSettings, simulate_cohort
from mil_crcrs.train.cutoff import Cutoff
from mil_crcrs.train.settings import FitSettings
from tests.helpers import make_meta


def scores_of(attention, contribution=None, slides=("s1",), tile_slide=None, coords=None):
    attention = np.asarray(attention, dtype=np.float64)
    n = attention.size
    return TileScores(
        patient_id="P1",
        crcrs=0.25,
        slide_ids=tuple(slides),
        tile_slide=np.zeros(n, dtype=np.int64) if tile_slide is None else np.asarray(tile_slide),
        coords=np.stack([np.arange(n) * 10, np.zeros(n)], 1).astype(np.int64)
        if coords is None
        else np.asarray(coords),
        attention=attention,
        contribution=attention - attention.mean() if contribution is None else contribution,
    )


# -- painting ------------------------------------------------------------------------------------


def test_paint_two_tiles_by_hand():
    # Two 4-px tiles at downsample 2 on a 4x6 canvas: each covers 2x2 canvas pixels.
    painted = paint_tiles(
        np.array([1.0, 3.0]), np.array([[0, 0], [4, 4]]), 4, shape=(4, 6), downsample=2.0
    )
    expected = np.full((4, 6), np.nan)
    expected[0:2, 0:2] = 1.0
    expected[2:4, 2:4] = 3.0
    np.testing.assert_array_equal(painted, expected)


def test_overlapping_tiles_average_and_tiny_tiles_cover_a_pixel():
    painted = paint_tiles(np.array([1.0, 3.0]), np.array([[0, 0], [2, 0]]), 4, (2, 4), 1.0)
    np.testing.assert_array_equal(painted[0], [1.0, 1.0, 2.0, 2.0])
    # A tile smaller than a canvas pixel still shows.
    tiny = paint_tiles(np.array([5.0]), np.array([[30, 10]]), 2, (4, 4), 16.0)
    assert np.nansum(tiny) == 5.0 and tiny[1, 2] == 5.0


def test_tiles_beyond_the_canvas_are_clipped():
    painted = paint_tiles(np.array([1.0]), np.array([[6, 6]]), 4, (8, 8), 1.0)
    assert np.isfinite(painted).sum() == 4  # only the 2x2 corner inside


def test_scale_percentiles_and_signed():
    values = np.arange(101, dtype=float)
    scale = value_scale(values, (10, 90), signed=False)
    assert (scale.low, scale.high) == (10.0, 90.0)
    np.testing.assert_allclose(scale(np.array([0.0, 50.0, 100.0])), [0.0, 0.5, 1.0])
    signed = value_scale(np.array([-2.0, 1.0, 4.0]), (0, 100), signed=True)
    assert (signed.low, signed.high) == (-4.0, 4.0)
    np.testing.assert_allclose(signed(np.array([-4.0, 0.0, 2.0])), [0.0, 0.5, 0.75])
    assert np.all(ValueScale(1.0, 1.0)(np.array([3.0, 7.0])) == 0.5)  # constant values: middle


def test_smoothing_stays_inside_the_tiles_and_keeps_constants():
    value_map = np.full((20, 20), np.nan)
    value_map[5:15, 5:15] = 0.7
    smoothed = smooth_map(value_map, 3.0)
    np.testing.assert_array_equal(np.isnan(smoothed), np.isnan(value_map))
    np.testing.assert_allclose(smoothed[5:15, 5:15], 0.7)  # normalised convolution
    step = value_map.copy()
    step[5:15, 5:10] = 0.0
    blurred = smooth_map(step, 2.0)
    assert 0.0 < blurred[10, 9] < 0.7 and 0.0 < blurred[10, 10] < 0.7


def test_overlay_blends_only_painted_pixels():
    background = np.full((2, 2, 3), 100, dtype=np.uint8)
    unit = np.array([[np.nan, 1.0], [0.0, np.nan]])
    out = overlay(unit, background, "gray", alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[0, 1], [178, 178, 178])  # (100 + 255) / 2 rounded
    np.testing.assert_array_equal(out[1, 0], [50, 50, 50])


def test_blank_canvas_render_has_the_level0_extent():
    settings = HeatmapSettings(max_side_px=100, cmap="gray", alpha=1.0)
    image, unit, ds = render_heatmap(
        np.array([0.0, 1.0]),
        np.array([[0, 0], [400, 0]]),
        400,
        ValueScale(0.0, 1.0),
        settings,
        level0_size=(1000, 500),
    )
    assert ds == 10.0 and image.shape == (50, 100, 3) == blank_canvas(1000, 500, ds).shape
    assert canvas_shape(1000, 500, ds) == (50, 100)
    np.testing.assert_array_equal(image[10, 10], [0, 0, 0])  # value 0 -> black
    np.testing.assert_array_equal(image[10, 50], [255, 255, 255])  # value 1 -> white
    assert np.isnan(unit[45, 95])


def test_settings_fail_loudly():
    with pytest.raises(InputError, match="colormap"):
        HeatmapSettings(cmap="no-such-map")
    with pytest.raises(SettingError, match="^by must be one of"):
        HeatmapSettings(by="risk")
    with pytest.raises(InputError, match="alpha"):
        HeatmapSettings(alpha=1.5)
    with pytest.raises(InputError, match="percentiles"):
        HeatmapSettings(percentiles=(50, 10))


# -- one map per slide, from the patient-level attention ------------------------------------------


def test_a_patient_with_two_slides_gets_one_map_per_slide_on_one_scale(tmp_path: Path):
    infos = {}
    for sid in ("a", "b"):
        meta = replace(make_meta(sid, tile=8), level0_width=800, level0_height=600)  # tile 16
        coords = np.array([[0, 0], [16, 0], [0, 16]])
        infos[sid] = read_info(
            write_bag(tmp_path / f"{sid}.h5", np.zeros((3, 2)), coords, meta, dtype="float32")
        )
    attention = np.array([0.1, 0.2, 0.3, 0.05, 0.05, 0.3])
    scores = scores_of(
        attention,
        slides=("a", "b"),
        tile_slide=[0, 0, 0, 1, 1, 1],
        coords=np.tile([[0, 0], [16, 0], [0, 16]], (2, 1)),
    )
    maps = slide_heatmaps(scores, infos, HeatmapSettings(percentiles=(0, 100), max_side_px=500))
    assert [(m.slide_id, m.kind) for m in maps] == [
        ("a", "attention"),
        ("b", "attention"),
        ("a", "contribution"),
        ("b", "contribution"),
    ]
    a, b = maps[0], maps[1]
    assert a.scale == b.scale == ValueScale(0.05, 0.3)  # one scale over the patient's six tiles
    assert a.n_tiles == b.n_tiles == 3
    # The canvas covers the slide's recorded level-0 extent (800 x 600 at 1.6 px/px).
    assert a.image.shape == (375, 500, 3) and a.downsample == 1.6
    # Tile (0, 16) of slide a has the patient's top value, tile (0, 0) of slide b the bottom.
    assert np.nanmax(a.unit_map) == 1.0 and np.nanmin(b.unit_map) == 0.0
    assert a.unit_map[15, 5] == 1.0 and b.unit_map[5, 5] == 0.0  # 16-px tiles: 10 px here
    assert np.all(np.isnan(a.unit_map[10:20, 10:20]))  # no tile there

    fig = heatmap_figure(a)
    write_png(tmp_path / "out" / "a.png", fig)
    assert (tmp_path / "out" / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


def test_thumbnail_background_is_used(tmp_path: Path):
    meta = make_meta("a", tile=8)
    info = read_info(write_bag(tmp_path / "a.h5", np.zeros((1, 2)), [[0, 0]], meta))
    thumb = np.full((30, 40, 3), 200, dtype=np.uint8)
    maps = slide_heatmaps(
        scores_of([1.0], coords=[[0, 0]], slides=("a",)),
        {"a": info},
        HeatmapSettings(maps=("attention",)),
        thumbnails={"a": (thumb, 8.0)},
    )
    (m,) = maps
    assert m.image.shape == thumb.shape and m.downsample == 8.0
    assert np.isfinite(m.unit_map[:2, :2]).all() and not np.isfinite(m.unit_map[2:, 2:]).any()
    np.testing.assert_array_equal(m.image[10, 10], [200, 200, 200])


# -- top and bottom tiles ---------------------------------------------------------------------------


def test_select_tiles_by_attention_and_by_contribution():
    attention = np.array([0.1, 0.4, 0.2, 0.3])
    contribution = np.array([-0.5, 0.1, 0.7, -0.1])
    scores = scores_of(attention, contribution, slides=("a", "b"), tile_slide=[0, 0, 1, 1])
    table = select_tiles(scores, k=1, by="attention")
    assert list(table["group"]) == ["top", "bottom"]
    assert list(table["bag_index"]) == [1, 0]
    by_risk = select_tiles(scores, k=2, by="contribution")
    assert list(by_risk["bag_index"]) == [2, 1, 0, 3]
    assert list(by_risk["slide_id"]) == ["b", "a", "a", "b"]
    assert list(by_risk["tile"]) == [0, 1, 0, 1]  # row within the slide's own file
    assert list(by_risk["rank"]) == [1, 2, 1, 2]


def test_select_tiles_never_repeats_a_tile():
    table = select_tiles(scores_of([0.5, 0.3, 0.2]), k=2)
    assert table["bag_index"].is_unique and len(table) == 3
    assert list(table["group"]) == ["top", "top", "bottom"]


def test_gallery_figure_and_array_png(tmp_path: Path):
    tiles = [np.full((16, 16, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    fig = tile_gallery_figure([("top", tiles[:2], ["a", "b"]), ("bottom", tiles[2:], ["c"])])
    write_png(tmp_path / "g.png", fig)
    write_png(tmp_path / "t.png", tiles[1])
    from matplotlib.image import imread

    back = imread(tmp_path / "t.png")
    assert back.shape[:2] == (16, 16) and np.allclose(back[..., 0], 128 / 255, atol=1 / 255)


# -- quality helper ------------------------------------------------------------------------------


def test_attention_auroc_by_hand():
    planted = [np.array([True, False, False]), np.array([False, True, False, False])]
    perfect = [np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.7, 0.1, 0.1])]
    assert attention_auroc(perfect, planted) == 1.0
    # Bag 2 ranks its planted tile above one of three others: AUROC 1/3; mean with 1.0 is 2/3.
    half = [perfect[0], np.array([0.3, 0.2, 0.1, 0.4])]
    assert attention_auroc(half, planted) == pytest.approx(2 / 3)
    # Pooled: attention times bag size (1 = uniform) ranks across bags of different sizes.
    assert attention_auroc(perfect, planted, pooled=True) == 1.0
    assert np.isnan(attention_auroc([np.ones(3)], [np.zeros(3, dtype=bool)]))


# -- quality: on a simulated cohort, attention finds the planted tiles ------------------------------


class PlantedRegion:
    """A stand-in for a slide-level planted region: tiles whose x is below ``x_max``."""

    def __init__(self, x_max: int) -> None:
        self.x_max = x_max

    def is_planted(self, coords_level0: np.ndarray, tile_size_level0: int) -> np.ndarray:
        return coords_level0[:, 0] + tile_size_level0 // 2 < self.x_max


def test_planted_auroc_takes_masks_or_regions(tmp_path: Path):
    """The hook for slide-level cohorts: truth given as masks or as ``is_planted`` regions."""
    sim = simulate_cohort(
        tmp_path / "sim", SimulationSettings(n_patients=6, tiles_per_slide=(8, 12), dim=8)
    )
    model = CRCRSModel(
        [create_model("abmil", in_dim=8, hidden_dim=8, attn_dim=4)],
        [0.0],
        Cutoff(0.0, "median"),
        feature_dim=8,
        encoder=sim.settings.encoder,
    )
    regions = {sid: PlantedRegion(x_max=1500) for sid in sim.planted}
    masks = {}
    for sid in sim.planted:
        bag = read_bag(sim.features_dir / f"{sid}.h5")
        masks[sid] = regions[sid].is_planted(bag.coords, bag.info.tile_size_level0)
    args = (model, sim.features_dir)
    by_mask = planted_auroc(*args, masks, sim.clinical_csv)
    assert 0.0 <= by_mask <= 1.0
    assert planted_auroc(*args, regions, sim.clinical_csv) == by_mask
    with pytest.raises(InputError, match="no planted-tile truth"):
        planted_auroc(*args, dict(list(masks.items())[1:]), sim.clinical_csv)


# The rare scenario: risk lives in a rare tile phenotype (0-15 % of a patient's tiles) that only a
# non-linear per-tile detector can see. The model is trained on one cohort and its attention is
# scored on 40 new patients drawn from the same "world" (world_seed), tile by tile.
RARE = SimulationSettings(
    scenario="rare",
    n_patients=240,
    tiles_per_slide=(30, 60),
    slides_per_patient=(1, 2),
    dim=8,
    effect=2.0,
    rare_fraction=(0.0, 0.15),
    censoring=0.2,
)
RARE_FIT = FitSettings(
    folds=2,
    epochs=60,
    lr=2e-3,
    schedule="cosine",  # the recipe the AUROCs below were measured with, whatever the default
    batch_size=32,
    inner_val_fraction=0.0,
    model_kwargs={"hidden_dim": 64, "attn_dim": 32, "dropout": 0.0},
    progress=False,
    device="cpu",
)


def rare_auroc(root: Path, seed: int) -> dict[str, float]:
    train = simulate_cohort(root / f"train{seed}", replace(RARE, seed=seed))
    test = simulate_cohort(root / f"test{seed}", replace(RARE, seed=1000 + seed, n_patients=40))
    model = fit(train.features_dir, train.clinical_csv, replace(RARE_FIT, seed=seed))
    args = (model, test.features_dir, test.planted, test.clinical_csv)
    auroc = {
        "attention": planted_auroc(*args, by="attention"),
        "attention_pooled": planted_auroc(*args, by="attention", pooled=True),
        # contributions are signed against the reference (issue 27): in a patient scored above
        # it the planted tiles raise the risk; below it they may rightly lower it
        "contribution": planted_auroc(*args, by="contribution", above_reference=True),
    }
    print(f"seed {seed}: planted-tile AUROC", {k: round(v, 3) for k, v in auroc.items()})
    return auroc


def test_attention_finds_the_planted_rare_tiles(tmp_path: Path):
    # Measured (CPU, torch 2.14, bitwise reproducible; 2026-11-28 with RARE_FIT's cosine
    # schedule): attention 0.983, pooled 0.975, contribution 0.999; over seeds 1-5 attention
    # 0.759-0.997, contribution 0.913-1.0.
    auroc = rare_auroc(tmp_path, seed=1)
    assert auroc["attention"] > 0.75
    assert auroc["attention_pooled"] > 0.75
    assert auroc["contribution"] > 0.8


@pytest.mark.slow
def test_attention_finds_the_planted_rare_tiles_over_seeds(tmp_path: Path):
    # Measured (2026-11-28, cosine): attention 0.983, 0.759, 0.969, 0.965, 0.997 (mean 0.935).
    # Contribution, measured against the reference since issue 27, in the patients above it
    # (2026-12-07): 0.995, 0.852, 0.992, 0.974, 0.955 (over all patients, signed, seeds 2 and 5
    # give 0.768 and 0.681: a low-risk patient's planted tiles may lower the risk). With the one-cycle default instead,
    # seed 2's attention is 0.701 (the others 0.96-0.998): see the recipe issue.
    results = [rare_auroc(tmp_path, seed) for seed in range(1, 6)]
    attention = [r["attention"] for r in results]
    assert min(attention) > 0.75 and np.mean(attention) > 0.8
    assert min(r["contribution"] for r in results) > 0.8


# -- GeoJSON for QuPath ---------------------------------------------------------------------------


def test_geojson_validates_and_matches_the_tiles(tmp_path: Path):
    import json

    from mil_crcrs.explain.geojson import tiles_geojson, write_geojson

    coords = np.array([[0, 0], [256, 0], [1000, 512], [7, 9]])
    scores = scores_of(
        [0.1, 0.2, 0.3, 0.4],
        contribution=np.array([-0.5, 0.25, 1.0, 0.0]),
        slides=("a", "b"),
        tile_slide=[0, 1, 0, 0],
        coords=coords,
    )
    scores = replace(scores, extra={"integrated_gradients": np.array([1.0, 2.0, 3.0, 4.0])})
    write_geojson(tmp_path / "a.geojson", tiles_geojson(scores, "a", 256))
    collection = json.loads((tmp_path / "a.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    assert collection["properties"]["slide_id"] == "a"
    features = collection["features"]
    assert len(features) == 3  # slide a's tiles only, in the file's row order
    for feature, i in zip(features, [0, 2, 3], strict=True):
        assert feature["type"] == "Feature"
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon" and len(geometry["coordinates"]) == 1
        ring = np.array(geometry["coordinates"][0])
        assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()  # a closed ring
        x, y = coords[i]
        assert ring.min(0).tolist() == [x, y] and ring.max(0).tolist() == [x + 256, y + 256]
        props = feature["properties"]
        assert props["objectType"] == "tile"
        m = props["measurements"]
        assert m["attention"] == scores.attention[i] and m["contribution"] == scores.contribution[i]
        assert m["attention_x_n"] == pytest.approx(scores.attention[i] * 4)
        assert m["integrated_gradients"] == i + 1.0
        want = "raises risk" if scores.contribution[i] > 0 else "lowers risk"
        assert props["classification"]["name"] == want
    assert [f["properties"]["name"] for f in features] == ["a tile 0", "a tile 1", "a tile 2"]
    assert not list(tmp_path.glob(".*"))  # written atomically, no temporary left


def test_tile_size_in_level0_pixels_or_at_a_resolution():
    from mil_crcrs.explain.tiling import TileSize

    assert TileSize.parse("256") == TileSize(256) and TileSize(256).level0(None, "f") == 256
    at = TileSize.parse("224@0.5")
    assert at == TileSize(224, 0.5) and at.level0(0.25, "f") == 448
    with pytest.raises(InputError, match="needs the slide's resolution"):
        at.level0(None, "f.h5")
    for bad in ("abc", "256@", "0", "256@-1"):
        with pytest.raises(SettingError, match="^tile_size "):
            TileSize.parse(bad)


# -- the pictures' layout -------------------------------------------------------------------------


def _extent(artist, renderer):
    return artist.get_window_extent(renderer)


def _drawn(fig):
    fig.canvas.draw()  # places the labels
    return fig.canvas.get_renderer()


@pytest.mark.parametrize("shape", [(200, 900), (900, 250), (40, 30)])
def test_heatmap_image_fills_its_axes_under_the_title(shape):
    from mil_crcrs.explain.render import SlideHeatmap

    height, width = shape
    heatmap = SlideHeatmap(
        patient_id="P1",
        slide_id="S1",
        kind="attention",
        image=np.zeros((height, width, 3), dtype=np.uint8),
        unit_map=np.zeros((height, width)),
        downsample=1.0,
        scale=ValueScale(0.0, 1.0),
        cmap="inferno",
        crcrs=0.1,
        n_tiles=3,
    )
    fig = heatmap_figure(heatmap)
    renderer = _drawn(fig)
    image_box = _extent(fig.axes[0], renderer)
    # No letterbox: the axes have the image's aspect ratio...
    assert image_box.width / image_box.height == pytest.approx(width / height, rel=0.02)
    # ...and the image starts right under the title (no blank band, < 0.3 inch).
    title_box = _extent(fig._suptitle, renderer)
    assert 0 <= title_box.y0 - image_box.y1 < 0.3 * fig.dpi


def test_gallery_captions_never_overlap():
    long_id = "TCGA-AA-3514-01Z-00-DX1.5E5E3A2F-3C41-4F3D-B1E1-AB3C6F8E2D10"
    tiles = [np.zeros((32, 32, 3), dtype=np.uint8)] * 4
    captions = [
        f"{long_id}\n({10000 * i}, {20000 * i})\natt 12.3x  contr +0.0123" for i in range(4)
    ]
    fig = tile_gallery_figure([("top", tiles, captions), ("bottom", tiles, captions)])
    renderer = _drawn(fig)
    labels = [ax.xaxis.label for ax in fig.axes]
    boxes = [_extent(label, renderer) for label in labels]
    images = [_extent(ax, renderer) for ax in fig.axes]
    for i, box in enumerate(boxes):
        assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # inside the figure
        for j, other in enumerate(boxes[i + 1 :] + images, start=i + 1):
            if j - len(boxes) != i:  # a caption may touch its own tile only
                assert not box.overlaps(other), (labels[i].get_text(), j)


def test_km_legend_is_off_the_curves():
    from mil_crcrs.stats.plots import km_figure, year_ticks
    from mil_crcrs.stats.survival import kaplan_meier

    rng = np.random.default_rng(0)
    time = rng.exponential(700, 80)
    event = rng.random(80) < 0.7
    group = np.where(np.arange(80) % 2, "high", "low")
    km = kaplan_meier(time, event.astype(int), group, year_ticks(time.max() / 365.25) * 365.25)
    fig = km_figure(km, "title", 365.25)
    renderer = _drawn(fig)
    ax = fig.axes[0]
    curves = _extent(ax, renderer)
    legend = _extent(ax.get_legend(), renderer)
    assert legend.y0 >= curves.y1 - 1  # above the plotting area
    assert _extent(fig._suptitle, renderer).y0 >= legend.y1 - 1


def test_gallery_captions_wrap_at_spaces_and_never_split_a_number():
    from mil_crcrs.explain.figures import _wrap_caption

    wrapped = _wrap_caption("P050-S1\n(1792, 896)\natt 2.5x  contr +0.087", 14)
    assert "+0.087" in wrapped.splitlines()[-1]  # "contr +0." / "087" before
    long_id = _wrap_caption("TCGA-AA-3514-01A-01D-1234_x.svs", 14)
    assert all(len(line) <= 14 for line in long_id.splitlines())
    assert long_id.replace("\n", "") == "TCGA-AA-3514-01A-01D-1234_x.svs"
