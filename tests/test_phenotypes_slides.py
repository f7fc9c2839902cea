"""``crcrs phenotypes --slides``: galleries of tile pixels and slide maps over thumbnails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("openslide")
pytest.importorskip("timm")

from feature_extraction.explain.phenotypes import _gallery_pixels, make_phenotype_atlas  # noqa: E402
from feature_extraction.explain.pixels import slide_files  # noqa: E402
from feature_extraction.running.pipeline import extract  # noqa: E402
from mil_crcrs import fit  # noqa: E402
from mil_crcrs.phenotypes import ClusterSettings, PhenotypeSettings  # noqa: E402
from tests.helpers import FAST, tiny, write_tissue_slide  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_galleries_and_slide_maps_come_from_the_slides(tmp_path: Path):
    from matplotlib.image import imread

    slides = tmp_path / "slides"
    slides.mkdir()
    rows = []
    for i in range(4):
        write_tissue_slide(slides / f"S{i}.tiff")
        rows.append((f"P{i}", f"S{i}", 10.0 * (i + 1), i % 2))
    clinical = tmp_path / "clinical.csv"
    pd.DataFrame(rows, columns=["patient_id", "slide_id", "time", "event"]).to_csv(
        clinical, index=False
    )
    extract([slides], tmp_path / "features", FAST)
    model = fit(tmp_path / "features", clinical, tiny(folds=2, epochs=1, inner_val_fraction=0.0))
    settings = PhenotypeSettings(
        cluster=ClusterSettings(k=2), map_tiles=0, slide_maps=2, gallery_tiles=3, device="cpu"
    )
    out = tmp_path / "atlas"
    atlas = make_phenotype_atlas(model, tmp_path / "features", clinical, out, slides, settings)
    for name in ("galleries/P1.png", "galleries/P2.png", "galleries/overview.png"):
        image = imread(out / name)
        assert image.std() > 0.05, name  # tissue, not a blank page
    assert len(list((out / "slide_maps").glob("*.png"))) == 2
    record = json.loads((out / "atlas.json").read_text())
    assert len(record["slides"]) == 4 and not record["notes"]
    # Each gallery tile is read at the extraction's tile size, from its own slide.
    pixels = _gallery_pixels(atlas.galleries, atlas.inputs.store, slide_files(slides))
    size = atlas.inputs.store.info("S0").tile_size_px
    assert set(pixels) == set(atlas.galleries["index"])
    assert all(p.shape == (size, size, 3) and p.dtype == np.uint8 for p in pixels.values())
