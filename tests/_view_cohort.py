"""A small demo-like cohort for the viewer's tests, built in a few seconds.

The slides are the demo's (:func:`~feature_extraction.synthetic.cohort.build_demo_cohort`: real
H&E tissue with a planted pattern, pyramidal TIFFs OpenSlide reads); the features are written
directly instead of by an encoder (4-d: the first is 1 on planted tiles, the rest noise), and a
tiny abmil ensemble is fitted on them, so the model's attention and contributions are real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from feature_extraction.synthetic.cohort import build_demo_cohort
from feature_extraction.synthetic.settings import DemoCohortSettings
from mil_crcrs.data.store import FeatureMeta, write_bag
from mil_crcrs.simulate.planted import read_planted
from tests.helpers import tiny


@dataclass(frozen=True)
class ViewCohort:
    root: Path
    slides: Path
    features: Path
    clinical: Path
    model: Path
    planted: dict[str, np.ndarray]  # slide id -> (n, 2) level-0 top-left of planted tiles
    tile_px: int
    phenotypes: Path  # slide_id, x, y, phenotype: "planted" or "other tissue" per tile


def build_view_cohort(root: Path, n_patients: int = 6) -> ViewCohort:
    """Slides, features, a clinical table and a fitted model under ``root``."""
    from mil_crcrs import fit

    settings = DemoCohortSettings(
        n_patients=n_patients, slide_tiles=(4, 4), slides_per_patient=(1, 1), seed=1
    )
    cohort = build_demo_cohort(root / "cohort", settings, workers=1)
    rng = np.random.default_rng(0)
    planted = {}
    rows = []
    for sid, path in cohort.planted.items():
        region = read_planted(path)
        coords = region.tissue_xy.astype(np.int64)
        is_planted = region.is_planted(coords, region.tile_size_px)
        features = rng.normal(scale=0.3, size=(len(coords), 4)).astype(np.float32)
        features[:, 0] += 2.0 * is_planted
        meta = FeatureMeta(
            sid, "toy", region.tile_size_px, region.tile_size_px, 0.5, 0.5,
            region.width_px, region.height_px,
        )  # fmt: skip
        write_bag(root / "features" / f"{sid}.h5", features, coords, meta, dtype="float32")
        planted[sid] = region.planted_xy
        names = np.where(is_planted, "planted", "other tissue")
        rows += [(sid, x, y, name) for (x, y), name in zip(coords.tolist(), names, strict=True)]
    table = pd.DataFrame(rows, columns=["slide_id", "x", "y", "phenotype"])
    table.to_csv(root / "phenotypes.csv", index=False)
    model = fit(
        root / "features",
        cohort.clinical_csv,
        tiny(model="abmil", folds=2, epochs=3, inner_val_fraction=0.0),
    )
    model.save(root / "model")
    return ViewCohort(
        root=root,
        slides=cohort.root / "slides",
        features=root / "features",
        clinical=cohort.clinical_csv,
        model=root / "model",
        planted=planted,
        tile_px=settings.tile_size_px,
        phenotypes=root / "phenotypes.csv",
    )
