"""The demo's slides: rendering a mosaic of tissue tiles and writing it as a pyramidal TIFF.

Every slide is a mosaic of tiles cut from the tissue pools (:mod:`.sources`), flipped, rotated
by multiples of 90 degrees and mildly stain-jittered, laid out on a white background as the
slide's piece of tissue (:mod:`.design`), and written as a tiled JPEG pyramid that OpenSlide
opens (:func:`write_pyramidal_tiff`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from feature_extraction.synthetic.settings import DemoCohortSettings
from feature_extraction.synthetic.sources import TilePool
from mil_crcrs.atomic import atomic_path
from mil_crcrs.errors import InputError

_BACKGROUND_RGB = (243, 242, 240)


def write_pyramidal_tiff(
    path: str | os.PathLike,
    image: np.ndarray,
    mpp: float,
    n_levels: int = 3,
    jpeg_quality: int = 80,
    tile_px: int = 256,
) -> None:
    """Write an RGB image as a tiled JPEG pyramid that OpenSlide opens as "generic-tiff".

    Each level is its own page (reduced levels with ``subfiletype=1``), ``photometric='rgb'``,
    and the resolution tags give ``mpp`` at level 0 (OpenSlide reports ``openslide.mpp-x``).
    The file appears atomically.

    Parameters
    ----------
    path : output file (``.tiff``)
    image : (height, width, 3) uint8 level-0 pixels
    mpp : microns per level-0 pixel
    n_levels : number of levels, each half the size of the one before
    jpeg_quality : JPEG quality of the tiles
    tile_px : TIFF tile edge (a multiple of 16)
    """
    import tifffile
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a (height, width, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    levels = [image]
    for _ in range(1, n_levels):
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(2)))
    with atomic_path(path, suffix=".tiff") as tmp, tifffile.TiffWriter(tmp) as tif:
        for i, level in enumerate(levels):
            px_per_cm = 1e4 / (mpp * image.shape[1] / level.shape[1])
            tif.write(
                level,
                photometric="rgb",
                tile=(tile_px, tile_px),
                compression="jpeg",
                compressionargs={"level": jpeg_quality},
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
            )


def render_slide(
    rng: np.random.Generator,
    tissue: np.ndarray,
    planted: np.ndarray,
    normal_pool: TilePool,
    planted_pool: TilePool,
    settings: DemoCohortSettings,
) -> np.ndarray:
    """(height, width, 3) uint8 level-0 pixels of one slide."""
    from PIL import Image

    size, margin = settings.tile_size_px, settings.margin_tiles
    canvas = Image.new("RGB", settings.slide_size_px, _BACKGROUND_RGB)
    slide_scale = 1 + settings.stain_jitter * rng.uniform(-1, 1, size=3)
    for r, c in np.argwhere(tissue):
        pool = planted_pool if planted[r, c] else normal_pool
        tile = pool.cut(rng, size)
        tile_scale = slide_scale * (1 + settings.stain_jitter / 2 * rng.uniform(-1, 1, size=3))
        canvas.paste(
            tile.point(_jitter_lut(tile_scale)), ((c + margin) * size, (r + margin) * size)
        )
    return np.asarray(canvas)


def _jitter_lut(od_scale: np.ndarray) -> list[int]:
    """768-entry RGB lookup table scaling each channel's optical density by ``od_scale`` (3,)."""
    od = -np.log(np.maximum(np.arange(256, dtype=np.float64), 1.0) / 255.0)
    lut = np.clip(np.round(255.0 * np.exp(-np.outer(od_scale, od))), 0, 255)
    return lut.astype(np.int64).ravel().tolist()


def check_openslide_mpp(path: Path, mpp: float) -> None:
    """Refuse a TIFF whose mpp the installed OpenSlide does not read as ``mpp``."""
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        found = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    if found is None or abs(float(found) - mpp) > 1e-3 * mpp:
        raise InputError(
            f"{path}: OpenSlide {openslide.__library_version__} reads mpp {found!r}, not {mpp}; "
            "generic-TIFF resolution tags need OpenSlide >= 4 (pip install openslide-bin)"
        )
