"""Pixels from the slide files: which slide a feature file came from, its thumbnail, its tiles.

Tiles are read the way extraction reads them (:class:`~feature_extraction.reading.loader.TileBlocks`:
the best pyramid level, resized to the tile size), so their re-embedding reproduces the stored
features (:func:`feature_extraction.explain.encoder.check_reembedding`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from feature_extraction.reading.slides import Slide, find_slides
from mil_crcrs.data.store import BagInfo
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.explain.paint import canvas_downsample


def slide_files(paths: Sequence[str | os.PathLike] | str | os.PathLike | None) -> dict[str, Path]:
    """Slide id (file stem) -> slide file, from files and folders and their sub-folders (a slide
    folder whose sub-folders STAMP mirrored into its feature folder); empty for None."""
    if paths is None:
        return {}
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    folders: list[Path] = []
    for p in map(Path, paths):
        folders.append(p)
        if p.is_dir():
            folders.extend(
                d for d in sorted(p.rglob("*")) if d.is_dir() and not d.name.startswith(".")
            )
    return {p.stem: p for p in find_slides(folders)}


def open_slide(path: Path, info: BagInfo) -> Slide:
    """Open the slide a feature file was made from, checking that its size matches."""
    slide = Slide(path, mpp=info.slide_mpp)
    if info.level0_width and info.level0_height:
        width, height = slide.dimensions
        if (width, height) != (info.level0_width, info.level0_height):
            slide.close()
            raise InputError(
                f"{path}: slide is {width}x{height} px but "
                f"{info.path} was made from a {info.level0_width}x{info.level0_height} px slide; "
                "is it the right slide?"
            )
    return slide


def thumbnail(slide: Slide, max_side_px: int) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 thumbnail with its longest side about ``max_side_px``, and its downsample."""
    width, height = slide.dimensions
    downsample = canvas_downsample(width, height, max_side_px)
    return slide.read_level_scaled(slide.mpp * downsample)


def read_tiles(slide: Slide, coords_level0: np.ndarray, info: BagInfo) -> np.ndarray:
    """(T, s, s, 3) uint8 tiles at the extraction resolution, read as extraction reads them.

    Parameters
    ----------
    slide : the open slide
    coords_level0 : (T, 2) level-0 top-left corners
    info : the feature file's description (tile size in level-0 and target pixels)
    """
    from feature_extraction.reading.loader import TileBlocks

    if not info.tile_size_level0 or not info.tile_size_px:
        raise SettingError(
            "tile_size",
            f"is needed: {info.path} records no tile size and no CLAM patches/ file beside it "
            "does, so its tiles cannot be cut",
        )
    reader = TileBlocks(slide.path, slide.mpp, [], info.tile_size_level0, info.tile_size_px)
    coords = np.asarray(coords_level0, dtype=np.int64).reshape(-1, 2)
    return np.stack([reader.read_block(slide, xy[None])[0] for xy in coords])
