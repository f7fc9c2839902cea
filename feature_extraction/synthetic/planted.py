"""The demo's ground truth per slide: which tiles are tissue and which are planted.

:func:`~feature_extraction.synthetic.cohort.build_demo_cohort` writes one JSON file per slide
(:func:`planted_json`); :func:`read_planted` reads it back as a :class:`PlantedRegion`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from feature_extraction.synthetic.settings import DemoCohortSettings


@dataclass(frozen=True)
class PlantedRegion:
    """A slide's ground truth: which level-0 tiles are tissue, and which of them are planted.

    Attributes
    ----------
    slide_id : the slide's id
    width_px, height_px : level-0 size
    tile_size_px : tile edge in level-0 pixels
    tissue_xy : (n_tissue, 2) int64 top-left (x, y) of every tissue tile, level-0 pixels
    planted_xy : (n_planted, 2) int64 top-left (x, y) of the planted tiles (a subset)
    """

    slide_id: str
    width_px: int
    height_px: int
    tile_size_px: int
    tissue_xy: np.ndarray
    planted_xy: np.ndarray

    @property
    def extent(self) -> float:
        """Fraction of the slide's tissue tiles that are planted."""
        return len(self.planted_xy) / max(len(self.tissue_xy), 1)

    def is_planted(self, coords_level0: np.ndarray, tile_size_level0: int) -> np.ndarray:
        """Whether the centre of each tile lies in a planted tile.

        Parameters
        ----------
        coords_level0 : (n, 2) top-left (x, y) of tiles in level-0 pixels (as in feature files)
        tile_size_level0 : the edge of those tiles in level-0 pixels

        Returns
        -------
        (n,) bool
        """
        coords = np.asarray(coords_level0, dtype=np.int64).reshape(-1, 2)
        centre = coords + tile_size_level0 // 2
        cells = {tuple(xy) for xy in (self.planted_xy // self.tile_size_px).tolist()}
        idx = centre // self.tile_size_px
        return np.array([tuple(xy) in cells for xy in idx.tolist()], dtype=bool)


def read_planted(path: str | os.PathLike) -> PlantedRegion:
    """Read a planted-mask JSON written by
    :func:`~feature_extraction.synthetic.cohort.build_demo_cohort`."""
    data = json.loads(Path(path).read_text())
    size = int(data["tile_size_px"])

    def top_left(rects: list) -> np.ndarray:
        return np.asarray([r[:2] for r in rects], dtype=np.int64).reshape(-1, 2)

    return PlantedRegion(
        slide_id=str(data["slide_id"]),
        width_px=int(data["width_px"]),
        height_px=int(data["height_px"]),
        tile_size_px=size,
        tissue_xy=top_left(data["tissue_rects_level0"]),
        planted_xy=top_left(data["planted_rects_level0"]),
    )


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
