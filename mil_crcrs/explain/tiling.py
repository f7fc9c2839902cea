"""A feature file's tile geometry: tile edge in level-0 pixels, extent, what a file lacks.

Maps and galleries need each tile's footprint on the slide. Our files record it; CLAM's and
others' may record it only at a pyramid level (completed from the slide's
``level_downsamples``) or not at all (the user's :class:`TileSize`, or the step of the
coordinates' grid). :func:`complete_tiling` fills in what a file lacks; :func:`tile_edge_level0`
gives the edge a map paints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from mil_crcrs.errors import InputError, SettingError

if TYPE_CHECKING:
    from mil_crcrs.data.store import BagInfo


def check_coords_known(info: BagInfo, coords: np.ndarray) -> None:
    """Raise :class:`InputError` when a slide's tile coordinates are unknown (stored as -1)."""
    if not info.has_coords or (coords.size and (coords < 0).all()):
        raise InputError(
            f"{info.path}: tile coordinates unknown ({info.coords_note or 'stored as -1'}); a "
            "map needs them"
        )


def tile_edge_level0(info: BagInfo, coords: np.ndarray) -> float:
    """A slide's tile edge in level-0 pixels: recorded, else the step of the coords' grid.

    Raises
    ------
    InputError
        if the coordinates are unknown.
    SettingError
        for ``tile_size`` if the edge is neither recorded nor guessable.
    """
    check_coords_known(info, coords)
    if info.tile_size_level0:
        return float(info.tile_size_level0)
    # CLAM and others may not record it: the grid step is the best guess.
    steps = [np.diff(np.unique(coords[:, axis])) for axis in (0, 1)]
    steps = np.concatenate([s[s > 0] for s in steps])
    if steps.size == 0:
        raise SettingError(
            "tile_size", f"is needed: {info.path} records no tile size, so no map can be drawn"
        )
    return float(steps.min())


@dataclass(frozen=True)
class TileSize:
    """A tile edge stated by the user for feature files that do not record it.

    Not the ``tile_size_level0`` of :class:`~mil_crcrs.data.store.ReadSettings`: this one may be
    stated at a resolution (``224@0.5``), as the encoder saw the tiles.

    Parameters
    ----------
    px : the tile edge in pixels
    mpp : the resolution of those pixels in microns per pixel; None = level-0 pixels
    """

    px: int
    mpp: float | None = None

    def __post_init__(self) -> None:
        if self.px < 1:
            raise SettingError("tile_size", f"must be a positive number of pixels, got {self.px}")
        if self.mpp is not None and not self.mpp > 0:
            raise SettingError("tile_size", f"resolution must be positive um/px, got {self.mpp}")

    @classmethod
    def parse(cls, text: str) -> TileSize:
        """``"256"`` (level-0 pixels) or ``"224@0.5"`` (224 pixels at 0.5 um/px)."""
        size, at, mpp = str(text).partition("@")
        try:
            return cls(int(size), float(mpp) if at else None)
        except ValueError:
            raise SettingError(
                "tile_size",
                "must be PX (level-0 pixels) or PX@MPP (pixels at MPP um/px), "
                f"e.g. 256 or 224@0.5; got {text!r}",
            ) from None

    def __str__(self) -> str:
        return f"{self.px}" if self.mpp is None else f"{self.px}@{self.mpp:g}"

    def level0(self, slide_mpp: float | None, source: str) -> int:
        """The edge in level-0 pixels, given the slide's level-0 resolution (um/px)."""
        if self.mpp is None:
            return self.px
        if not slide_mpp:
            raise SettingError(
                "tile_size",
                f"{self} needs the slide's resolution, which neither {source} nor a slide file "
                "gives; give the slide files or the size in level-0 px",
            )
        return int(round(self.px * self.mpp / slide_mpp))


def complete_tiling(
    info: BagInfo,
    tile_size: TileSize | None = None,
    slide_mpp: float | None = None,
    level_downsamples: Sequence[float] | None = None,
) -> BagInfo:
    """``info`` with the tile size it lacks filled in.

    A file that names its tile size at a pyramid level but not in level-0 pixels (CLAM's
    ``patch_level`` without ``downsample``) gets it from the slide's ``level_downsamples``, one
    that names it in microns (STAMP's ``tile_size_um``) from the slide's resolution; a file that
    names none gets ``tile_size``. A stated size that contradicts the file's own is an
    error, never silently preferred.

    Parameters
    ----------
    info : the feature file's description
    tile_size : the tile edge the user stated, or None
    slide_mpp : the slide's level-0 resolution (um/px) when a slide file is open
    level_downsamples : the open slide's downsample of each level

    Returns
    -------
    BagInfo with ``tile_size_level0`` and ``tile_size_px`` set where they can be known
    """
    size0, size_px = info.tile_size_level0, info.tile_size_px
    mpp = slide_mpp or info.slide_mpp
    if size0 is None and info.tile_size_um and mpp:  # STAMP: tiles cut in microns
        from mil_crcrs.data.store import tile_edge_from_um

        size0 = tile_edge_from_um(info.layout, info.tile_size_um, mpp)
    if size0 is None and size_px and info.level is not None and level_downsamples is not None:
        if info.level >= len(level_downsamples):
            raise InputError(
                f"{info.path}: tiles were cut at pyramid level {info.level} but the slide has "
                f"{len(level_downsamples)} level(s); is it the right slide?"
            )
        size0 = int(round(size_px * float(level_downsamples[info.level])))
    if tile_size is not None:
        stated = tile_size.level0(slide_mpp or info.slide_mpp, str(info.path))
        if size0 is not None and abs(stated - size0) > 1:
            raise SettingError(
                "tile_size",
                f"{tile_size} is {stated} level-0 px but {info.path} records tiles of {size0} "
                "level-0 px; drop the stated size or correct it",
            )
        size0 = size0 or stated
        if size_px is None:
            size_px = tile_size.px if tile_size.mpp is not None else stated
    return replace(info, tile_size_level0=size0, tile_size_px=size_px)


def tiles_extent(coords_level0: np.ndarray, tile_size_level0: float) -> tuple[int, int]:
    """(width, height) in level-0 pixels reaching past the last tile by one tile."""
    if coords_level0.size == 0:
        return (int(tile_size_level0), int(tile_size_level0))
    far = coords_level0.max(axis=0) + 2 * tile_size_level0
    return int(far[0]), int(far[1])
