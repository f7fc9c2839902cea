"""The demo's ground truth per slide: which tiles are tissue and which are planted.

:func:`~feature_extraction.synthetic.cohort.build_demo_cohort` writes one JSON file per slide
(:func:`planted_json`); :func:`mil_crcrs.simulate.planted.read_planted` reads it back as a
:class:`~mil_crcrs.simulate.planted.PlantedRegion`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feature_extraction.synthetic.settings import DemoCohortSettings


def planted_json(row: pd.Series, settings: DemoCohortSettings) -> dict:
    """The planted-mask JSON of one slide: ``row`` is a row of
    :func:`~feature_extraction.synthetic.design.design_cohort`'s table."""
    size, margin = settings.tile_size_px, settings.margin_tiles
    width, height = settings.slide_size_px

    def rects(mask: np.ndarray) -> list[list[int]]:
        return [
            [(c + margin) * size, (r + margin) * size, size, size] for r, c in np.argwhere(mask)
        ]

    return {
        "slide_id": row.slide_id,
        "patient_id": row.patient_id,
        "mpp": settings.mpp,
        "width_px": width,
        "height_px": height,
        "tile_size_px": size,
        "extent": row.n_planted / row.n_tissue,
        "tissue_rects_level0": rects(row.tissue),
        "planted_rects_level0": rects(row.planted),
    }
