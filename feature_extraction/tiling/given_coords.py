"""Tiles at given coordinates (the ``coords_dir`` setting): reuse a segmentation a lab trusts.

For each slide, ``DIR`` holds an HDF5 file with a ``coords`` dataset, (n, 2) top-left (x, y) in
level-0 pixels, found as (first match):

- ``DIR/<slide>.h5`` or ``DIR/patches/<slide>.h5`` (CLAM's ``create_patches_fp.py``),
- ``DIR/<slide>_patches.h5`` or ``DIR/patches/<slide>_patches.h5`` (TRIDENT).

The tile footprint in level-0 pixels comes from the file where it says: TRIDENT's
``patch_size_level0``, or CLAM's ``patch_size`` at ``patch_level`` (times that level's
downsample); otherwise from the settings (``tile_size_px`` at ``target_mpp``). Tiles are resized
to ``tile_size_px``. Coordinates off a common lattice (CLAM starts each tissue contour's lattice
afresh) are read one tile at a time; on one lattice, in blocks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from feature_extraction.reading.slides import Slide, SlideError
from feature_extraction.tiling.grid import TileGrid, tile_size_level0
from mil_crcrs.data.store import read_coords_file
from mil_crcrs.errors import InputError

#: Reasons recorded in the errors report.
NO_COORDS = "no_coords"
BAD_COORDS = "bad_coords"


def coords_file(folder: str | os.PathLike, slide_id: str) -> Path | None:
    """The coordinates file of ``slide_id`` in ``folder``, or None."""
    folder = Path(folder)
    for sub in (folder, folder / "patches"):
        for name in (f"{slide_id}.h5", f"{slide_id}_patches.h5"):
            if (sub / name).is_file():
                return sub / name
    return None


def _attr(attrs, key: str):
    value = attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None if value is None else np.asarray(value).reshape(-1)[0].item()


def given_grid(
    folder: str | os.PathLike, slide: Slide, tile_size_px: int, target_mpp: float
) -> TileGrid:
    """The tiles a coordinates file lists for ``slide``.

    Raises
    ------
    SlideError
        ``no_coords`` when the slide has no file; ``bad_coords`` when the file has no (n, 2)
        ``coords``, or coordinates that are not finite, repeat, or leave the slide.
    """
    path = coords_file(folder, slide.path.stem)
    if path is None:
        raise SlideError(
            f"{slide.path}: no coordinates file {slide.path.stem}.h5 (or _patches.h5) in {folder}",
            reason=NO_COORDS,
        )
    try:
        coords, attrs = read_coords_file(path)
    except InputError as exc:
        raise SlideError(str(exc), reason=BAD_COORDS) from None
    size0 = _footprint(attrs, slide, path)
    if size0 is None:
        size0 = tile_size_level0(tile_size_px, target_mpp, slide.mpp)
    coords = _checked(coords, size0, slide, path)
    return TileGrid(coords, np.ones(len(coords), np.float32), size0, int(tile_size_px))


def _footprint(attrs: dict, slide: Slide, path: Path) -> int | None:
    """Tile edge in level-0 pixels as the file records it, or None."""
    level0 = _attr(attrs, "patch_size_level0")
    if level0:
        return int(round(level0))
    size, level = _attr(attrs, "patch_size"), _attr(attrs, "patch_level")
    if not size:
        return None
    level = int(level or 0)
    if not 0 <= level < len(slide.level_downsamples):
        raise SlideError(
            f"{path}: patch_level {level}, but the slide has {len(slide.level_downsamples)} "
            "level(s)",
            reason=BAD_COORDS,
        )
    return int(round(size * slide.level_downsamples[level]))


def _checked(coords: np.ndarray, size0: int, slide: Slide, path: Path) -> np.ndarray:
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
        raise SlideError(f"{path}: 'coords' must be (n, 2), got {coords.shape}", reason=BAD_COORDS)
    if not np.isfinite(coords).all() or (coords != np.round(coords)).any():
        raise SlideError(f"{path}: 'coords' holds non-integer values", reason=BAD_COORDS)
    coords = coords.astype(np.int64)
    width, height = slide.dimensions
    outside = (coords < 0).any(1) | (coords[:, 0] + size0 > width) | (coords[:, 1] + size0 > height)
    if outside.any():
        x, y = coords[np.argmax(outside)]
        raise SlideError(
            f"{path}: {int(outside.sum())} tile(s) of {size0} px leave the {width}x{height}-px "
            f"slide, e.g. at ({x}, {y}); are these coordinates for this slide, in level-0 pixels?",
            reason=BAD_COORDS,
        )
    if len(np.unique(coords, axis=0)) != len(coords):
        raise SlideError(f"{path}: 'coords' lists some tiles twice", reason=BAD_COORDS)
    return coords


def on_one_lattice(coords: np.ndarray, size0: int) -> bool:
    """Whether every tile lies on one lattice of step ``size0`` (so blocks of them can be read)."""
    return bool(((coords - coords[:1]) % size0 == 0).all())
