"""The tile grid at a physical resolution, in level-0 pixels.

Tiles are ``tile_size_px`` pixels at ``target_mpp`` microns per pixel, so ``tile_size_level0 =
round(tile_size_px * target_mpp / slide_mpp)`` level-0 pixels, laid edge to edge from the slide's
top-left corner. A 40x slide (0.25 um/px) and a 20x slide (0.5 um/px) of the same tissue thus give
the same grid in microns: step 448 x 0.25 = 224 x 0.5 = 112 um at 0.5 um/px and 224-px tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from feature_extraction.tiling.tissue import TissueMask
from mil_crcrs.errors import InputError


@dataclass
class TileGrid:
    """The tiles kept on one slide.

    Attributes
    ----------
    coords_level0 : (n_tiles, 2) int64 top-left (x, y) in level-0 pixels, row by row
    tissue_fraction : (n_tiles,) float32, the share of each tile the tissue mask covers
    tile_size_level0 : tile edge in level-0 pixels
    tile_size_px : tile edge in target-resolution pixels
    """

    coords_level0: np.ndarray
    tissue_fraction: np.ndarray
    tile_size_level0: int
    tile_size_px: int

    def __len__(self) -> int:
        return len(self.coords_level0)


def tile_size_level0(tile_size_px: int, target_mpp: float, slide_mpp: float) -> int:
    """Tile edge in level-0 pixels: ``round(tile_size_px * target_mpp / slide_mpp)``, at least 1."""
    if tile_size_px < 1 or not target_mpp > 0 or not slide_mpp > 0:
        raise InputError(
            f"tile size {tile_size_px} px, target mpp {target_mpp} and slide mpp {slide_mpp} "
            "must all be positive"
        )
    return max(1, int(round(tile_size_px * target_mpp / slide_mpp)))


def tissue_fractions(tissue: TissueMask, coords_level0: np.ndarray, size_level0: int) -> np.ndarray:
    """The share of each square ``[x, x + size) x [y, y + size)`` that the mask covers.

    Footprints are rounded to whole mask pixels and summed with an integral image.

    Returns
    -------
    (n,) float32 in [0, 1]
    """
    mask = tissue.mask
    h, w = mask.shape
    sx, sy = tissue.scale_xy
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    xy = np.asarray(coords_level0, dtype=np.float64).reshape(-1, 2)
    x0 = np.clip(np.round(xy[:, 0] / sx).astype(np.int64), 0, w)
    y0 = np.clip(np.round(xy[:, 1] / sy).astype(np.int64), 0, h)
    x1 = np.clip(np.round((xy[:, 0] + size_level0) / sx).astype(np.int64), 0, w)
    y1 = np.clip(np.round((xy[:, 1] + size_level0) / sy).astype(np.int64), 0, h)
    x1 = np.maximum(x1, np.minimum(x0 + 1, w))
    y1 = np.maximum(y1, np.minimum(y0 + 1, h))
    covered = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = np.maximum(1, (x1 - x0) * (y1 - y0))
    return (covered / area).astype(np.float32)


def make_grid(
    tissue: TissueMask,
    level0_size: tuple[int, int],
    slide_mpp: float,
    target_mpp: float = 0.5,
    tile_size_px: int = 224,
    min_tissue_fraction: float = 0.5,
) -> TileGrid:
    """All whole tiles inside the slide whose tissue fraction reaches ``min_tissue_fraction``.

    Parameters
    ----------
    tissue : the slide's tissue mask
    level0_size : level-0 (width, height) in pixels
    slide_mpp : microns per level-0 pixel
    target_mpp : microns per pixel of the tiles the encoder sees
    tile_size_px : tile edge at ``target_mpp``
    min_tissue_fraction : keep a tile when at least this share of it is tissue (0..1; 0 keeps all)
    """
    if not 0.0 <= min_tissue_fraction <= 1.0:
        raise InputError(f"min tissue fraction must be in [0, 1], got {min_tissue_fraction}")
    size0 = tile_size_level0(tile_size_px, target_mpp, slide_mpp)
    width, height = level0_size
    nx, ny = width // size0, height // size0
    gy, gx = np.mgrid[0:ny, 0:nx]
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.int64) * size0
    fractions = tissue_fractions(tissue, coords, size0)
    keep = fractions >= min_tissue_fraction
    return TileGrid(
        coords_level0=coords[keep],
        tissue_fraction=fractions[keep],
        tile_size_level0=size0,
        tile_size_px=int(tile_size_px),
    )


def plan_batches(grid: TileGrid, batch_size: int, block_tiles: int) -> list[list[np.ndarray]]:
    """Group the grid's tiles into loader items.

    Tiles are grouped into ``block_tiles`` x ``block_tiles`` blocks of the grid (each read as one
    region; with 1, every tile is its own block, even where tiles overlap); blocks are packed, in row-major block order, into items of at most ``batch_size``
    tiles.

    Returns
    -------
    list of items; an item is a list of blocks; a block is an (m, 2) int64 array of level-0
    top-left corners
    """
    coords = grid.coords_level0
    if len(coords) == 0:
        return []
    k = max(1, min(block_tiles, math.isqrt(batch_size)))
    cell = coords // grid.tile_size_level0
    key = (cell[:, 1] // k) * (int(cell[:, 0].max()) // k + 1) + cell[:, 0] // k
    order = np.lexsort((coords[:, 0], coords[:, 1], key))
    coords, key = coords[order], key[order]
    if k == 1:  # one tile per block, whatever the coordinates (given ones may overlap)
        blocks = np.split(coords, np.arange(1, len(coords)))
    else:
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        blocks = np.split(coords, starts[1:])
    items: list[list[np.ndarray]] = []
    current: list[np.ndarray] = []
    n = 0
    for block in blocks:
        if n + len(block) > batch_size and current:
            items.append(current)
            current, n = [], 0
        current.append(block)
        n += len(block)
    if current:
        items.append(current)
    return items
