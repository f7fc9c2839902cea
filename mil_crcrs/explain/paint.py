"""Painting per-tile values on arrays: normalise, paint at the tile coords, smooth, colour.

Everything here works on numpy arrays in canvas pixels; a canvas covers a slide's level-0 extent
at a ``downsample`` (level-0 pixels per canvas pixel). The steps, in order:

1. :func:`value_scale`: a :class:`ValueScale` mapping the patient's values onto [0, 1];
2. :func:`paint_tiles`: each tile's value over the canvas pixels it covers (NaN elsewhere);
3. :func:`smooth_map`: optional Gaussian smoothing inside the painted area;
4. :func:`overlay`: the colormap's colours over a thumbnail or :func:`blank_canvas`.

matplotlib and scipy are imported inside the functions that use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mil_crcrs.errors import InputError

BACKGROUND_RGB = (255, 255, 255)


@dataclass(frozen=True)
class ValueScale:
    """How values were mapped onto [0, 1]: ``low`` maps to 0 and ``high`` to 1."""

    low: float
    high: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if not self.high > self.low:
            return np.full(values.shape, 0.5)
        return np.clip((values - self.low) / (self.high - self.low), 0.0, 1.0)


def value_scale(values: np.ndarray, percentiles: tuple[float, float], signed: bool) -> ValueScale:
    """The percentile normalisation of ``values`` (n,).

    Unsigned: the ``percentiles`` (low, high) of the values go to 0 and 1. Signed: with ``m``
    the ``high`` percentile of ``|values|``, ``[-m, m]`` goes to [0, 1], so zero sits at 0.5.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return ValueScale(0.0, 1.0)
    if signed:
        m = float(np.percentile(np.abs(values), percentiles[1]))
        return ValueScale(-m, m)
    low, high = np.percentile(values, percentiles)
    return ValueScale(float(low), float(high))


def canvas_downsample(level0_width: int, level0_height: int, max_side_px: int) -> float:
    """Level-0 pixels per canvas pixel so that the canvas' longest side is ``max_side_px``."""
    return max(1.0, max(level0_width, level0_height) / float(max_side_px))


def canvas_shape(level0_width: int, level0_height: int, downsample: float) -> tuple[int, int]:
    """(height, width) in pixels of a canvas covering the level-0 extent at ``downsample``."""
    return (
        max(1, int(np.ceil(level0_height / downsample))),
        max(1, int(np.ceil(level0_width / downsample))),
    )


def blank_canvas(level0_width: int, level0_height: int, downsample: float) -> np.ndarray:
    """(height, width, 3) uint8 white canvas standing in for a slide thumbnail."""
    height, width = canvas_shape(level0_width, level0_height, downsample)
    return np.full((height, width, 3), BACKGROUND_RGB, dtype=np.uint8)


def paint_tiles(
    values: np.ndarray,
    coords_level0: np.ndarray,
    tile_size_level0: float,
    shape: tuple[int, int],
    downsample: float,
) -> np.ndarray:
    """Paint per-tile values onto a canvas.

    Parameters
    ----------
    values : (n_tiles,) float
    coords_level0 : (n_tiles, 2) top-left (x, y) in level-0 pixels
    tile_size_level0 : tile edge in level-0 pixels
    shape : (height, width) of the canvas in pixels
    downsample : level-0 pixels per canvas pixel

    Returns
    -------
    (height, width) float64: the tile's value where one tile covers a pixel, the mean where
    tiles overlap, NaN where none does. Every tile covers at least one pixel.
    """
    values = np.asarray(values, dtype=np.float64)
    coords = np.asarray(coords_level0, dtype=np.float64)
    if coords.shape != (values.shape[0], 2):
        raise ValueError(f"coords must be ({values.shape[0]}, 2), got {coords.shape}")
    height, width = shape
    start = np.round(coords / downsample).astype(np.int64)
    stop = np.maximum(start + 1, np.round((coords + tile_size_level0) / downsample)).astype(
        np.int64
    )
    start = np.clip(start, 0, [width, height])
    stop = np.clip(stop, 0, [width, height])
    total = np.zeros(shape)
    count = np.zeros(shape)
    for v, (x0, y0), (x1, y1) in zip(values, start, stop, strict=True):
        total[y0:y1, x0:x1] += v
        count[y0:y1, x0:x1] += 1.0
    out = np.full(shape, np.nan)
    covered = count > 0
    out[covered] = total[covered] / count[covered]
    return out


def smooth_map(value_map: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing of a painted map (H, W) within the painted area.

    A normalised convolution: values are averaged with Gaussian weights over painted pixels only,
    so the background neither dilutes the tiles nor gets coloured. NaN stays NaN.
    """
    if sigma_px <= 0:
        return value_map
    from scipy.ndimage import gaussian_filter

    covered = np.isfinite(value_map)
    num = gaussian_filter(np.where(covered, value_map, 0.0), sigma_px, mode="constant")
    den = gaussian_filter(covered.astype(np.float64), sigma_px, mode="constant")
    out = np.full(value_map.shape, np.nan)
    out[covered] = num[covered] / np.maximum(den[covered], 1e-12)
    return out


def colormap(name: str) -> Any:
    """The matplotlib colormap ``name``; :class:`InputError` for an unknown name."""
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise InputError(
            f"unknown colormap {name!r}; try inferno, viridis, jet, magma or RdBu_r"
        ) from None


def overlay(unit_map: np.ndarray, background: np.ndarray, cmap: str, alpha: float) -> np.ndarray:
    """Colour a map of values in [0, 1] (NaN = unpainted) over an RGB background.

    Parameters
    ----------
    unit_map : (H, W) float in [0, 1] or NaN
    background : (H, W, 3) uint8
    cmap : matplotlib colormap name
    alpha : opacity of the colours

    Returns
    -------
    (H, W, 3) uint8; unpainted pixels keep the background.
    """
    if background.shape[:2] != unit_map.shape:
        raise ValueError(f"background {background.shape[:2]} and map {unit_map.shape} differ")
    painted = np.isfinite(unit_map)
    colours = colormap(cmap)(np.where(painted, unit_map, 0.0))[..., :3] * 255.0
    out = background.astype(np.float64)
    out[painted] = (1.0 - alpha) * out[painted] + alpha * colours[painted]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
