"""What a simulation planted, read back: one :class:`PlantedRegion` per slide.

Two simulators write their truth: the demo's synthetic slides
(:mod:`feature_extraction.synthetic`) one planted-mask JSON per slide, and
:func:`~mil_crcrs.simulate.write.simulate_cohort` a ``sim_planted`` dataset in each feature
file. :func:`read_planted` reads either.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mil_crcrs.data.store import read_bag, read_extra
from mil_crcrs.errors import InputError

PLANTED = "sim_planted"  # the extra dataset of a simulated feature file: planted tiles


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
    """Read a slide's planted truth.

    Parameters
    ----------
    path : a planted-mask JSON written by
        :func:`~feature_extraction.synthetic.cohort.build_demo_cohort`, or a simulated feature
        file written by :func:`~mil_crcrs.simulate.write.simulate_cohort` (every tile of it is
        tissue; its ``sim_planted`` dataset says which are planted)

    Returns
    -------
    PlantedRegion; ``is_planted(coords, tile_size)`` gives the (n_tiles,) mask of a feature file
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return _from_json(path)
    planted = read_extra(path, PLANTED)
    if planted is None:
        raise InputError(f"{path}: not a simulated feature file (no '{PLANTED}' dataset)")
    bag = read_bag(path)
    xy = np.asarray(bag.coords, dtype=np.int64).reshape(-1, 2)
    return PlantedRegion(
        slide_id=bag.info.slide_id,
        width_px=int(bag.info.level0_width),
        height_px=int(bag.info.level0_height),
        tile_size_px=int(bag.info.tile_size_level0),
        tissue_xy=xy,
        planted_xy=xy[planted.astype(bool)],
    )


def _from_json(path: Path) -> PlantedRegion:
    data = json.loads(path.read_text())
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
