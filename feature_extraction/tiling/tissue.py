"""Tissue segmentation on a low-resolution image of the slide, and its QC picture.

The slide is read at ``seg_mpp`` microns per pixel (from the best pyramid level), its HSV
saturation is median-smoothed and thresholded (Otsu with a floor, or a fixed value), then cleaned
up: a morphological closing, tissue pieces below a minimum area dropped, holes below a maximum
area filled. Every size is in microns, so a 40x and a 20x scan of one tissue segment alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mil_crcrs.atomic import atomic_path
from mil_crcrs.errors import SettingError

if TYPE_CHECKING:
    from feature_extraction.reading.slides import Slide

TISSUE_METHODS = ("otsu", "saturation")


@dataclass(frozen=True)
class TissueParams:
    """How tissue is told from background.

    Parameters
    ----------
    method : "otsu" (Otsu's threshold on saturation, never below ``saturation_threshold``) or
        "saturation" (the fixed ``saturation_threshold``)
    saturation_threshold : 0-255; the fixed threshold, and the floor under Otsu's (so a blank
        slide gives no tissue rather than half of its noise)
    seg_mpp : microns per pixel of the image segmentation runs on
    median_um : edge of the median filter applied to the saturation, in microns (0 = none)
    close_um : radius of the morphological closing, in microns (0 = none)
    min_tissue_area_um2 : tissue pieces smaller than this are dropped
    max_hole_area_um2 : holes in tissue smaller than this are filled

    Raises
    ------
    SettingError
        naming the field with a bad value.
    """

    method: str = "otsu"
    saturation_threshold: int = 20
    seg_mpp: float = 4.0
    median_um: float = 16.0
    close_um: float = 16.0
    min_tissue_area_um2: float = 25_000.0
    max_hole_area_um2: float = 25_000.0

    def __post_init__(self) -> None:
        if self.method not in TISSUE_METHODS:
            raise SettingError(
                "method", f"must be one of {', '.join(TISSUE_METHODS)}, got '{self.method}'"
            )
        if not 0 <= self.saturation_threshold <= 255:
            raise SettingError(
                "saturation_threshold", f"must be in 0..255, got {self.saturation_threshold}"
            )
        if not self.seg_mpp > 0:
            raise SettingError("seg_mpp", f"must be positive, got {self.seg_mpp}")
        for name in ("median_um", "close_um", "min_tissue_area_um2", "max_hole_area_um2"):
            if getattr(self, name) < 0:
                raise SettingError(name, f"must be >= 0, got {getattr(self, name)}")


@dataclass
class TissueMask:
    """A tissue mask and the thumbnail it was computed on.

    Attributes
    ----------
    mask : (h, w) bool, True = tissue
    thumbnail : (h, w, 3) uint8 RGB
    scale_xy : (sx, sy) level-0 pixels per mask pixel along x and y
    """

    mask: np.ndarray
    thumbnail: np.ndarray
    scale_xy: tuple[float, float]


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation scaled to 0-255: ``255 * (max - min) / max`` per pixel (0 where max is 0).

    Parameters
    ----------
    rgb : (h, w, 3) uint8

    Returns
    -------
    (h, w) uint8
    """
    hi = rgb.max(axis=-1).astype(np.float32)
    lo = rgb.min(axis=-1).astype(np.float32)
    sat = np.divide(hi - lo, hi, out=np.zeros_like(hi), where=hi > 0)
    return np.round(sat * 255.0).astype(np.uint8)


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values: foreground is ``values > t``.

    Maximises the between-class variance ``w0 * w1 * (mu0 - mu1)**2`` over ``t`` in 0..254 (the
    definition in Otsu 1979, the same convention as ``skimage.filters.threshold_otsu``).
    """
    hist = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)[:-1]  # weight of values <= t, for t = 0..254
    w1 = total - w0
    s0 = np.cumsum(hist * levels)[:-1]
    mu0 = np.divide(s0, w0, out=np.zeros_like(s0), where=w0 > 0)
    mu1 = np.divide(s0[-1] + hist[-1] * 255.0 - s0, w1, out=np.zeros_like(s0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return int(np.argmax(between))


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return xx**2 + yy**2 <= radius**2


def _drop_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0 or min_pixels <= 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def segment(rgb: np.ndarray, pixel_um: float, params: TissueParams) -> np.ndarray:
    """The tissue mask of a low-resolution RGB image.

    Parameters
    ----------
    rgb : (h, w, 3) uint8
    pixel_um : microns per pixel of ``rgb``
    params : thresholds and clean-up sizes

    Returns
    -------
    (h, w) bool, True = tissue
    """
    from scipy import ndimage

    sat = saturation(rgb)
    median_px = int(round(params.median_um / pixel_um))
    if median_px >= 2:
        sat = ndimage.median_filter(sat, size=median_px | 1, mode="nearest")
    threshold = params.saturation_threshold
    if params.method == "otsu":
        threshold = max(threshold, otsu_threshold(sat))
    mask = sat > threshold
    radius = int(round(params.close_um / pixel_um))
    if radius >= 1 and mask.any():
        padded = np.pad(mask, radius, mode="edge")
        mask = ndimage.binary_closing(padded, structure=_disk(radius))[
            radius:-radius, radius:-radius
        ]
    pixel_area = pixel_um**2
    mask = _drop_small(mask, params.min_tissue_area_um2 / pixel_area)
    if params.max_hole_area_um2 > 0 and mask.any():
        holes = ndimage.binary_fill_holes(mask) & ~mask
        small = holes & ~_drop_small(holes, params.max_hole_area_um2 / pixel_area)
        mask = mask | small
    return mask


def tissue_mask(slide: Slide, params: TissueParams) -> TissueMask:
    """Read ``slide`` at about ``params.seg_mpp`` and segment it."""
    thumbnail, scale = slide.read_level_scaled(params.seg_mpp)
    width0, height0 = slide.dimensions
    scale_xy = (width0 / thumbnail.shape[1], height0 / thumbnail.shape[0])
    mask = segment(thumbnail, pixel_um=scale * slide.mpp, params=params)
    return TissueMask(mask=mask, thumbnail=thumbnail, scale_xy=scale_xy)


def qc_image(
    tissue: TissueMask, coords_level0: np.ndarray, tile_size_level0: int, min_side_px: int = 1024
):
    """The thumbnail with the tissue outline (green) and the kept tiles (blue squares) drawn on it.

    Parameters
    ----------
    tissue : the mask and thumbnail
    coords_level0 : (n_tiles, 2) top-left (x, y) of the kept tiles in level-0 pixels
    tile_size_level0 : tile edge in level-0 pixels
    min_side_px : the picture is enlarged by a whole factor until its long side reaches this

    Returns
    -------
    PIL.Image.Image (RGB)
    """
    from PIL import Image, ImageDraw
    from scipy import ndimage

    h, w = tissue.mask.shape
    factor = max(1, min_side_px // max(h, w))
    image = Image.fromarray(tissue.thumbnail)
    mask = tissue.mask
    if factor > 1:
        image = image.resize((w * factor, h * factor), Image.Resampling.BILINEAR)
        mask = mask.repeat(factor, axis=0).repeat(factor, axis=1)
    pixels = np.array(image)
    outline = mask & ~ndimage.binary_erosion(mask, iterations=max(1, factor // 2 + 1))
    pixels[outline] = (0, 200, 0)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    sx, sy = tissue.scale_xy[0] / factor, tissue.scale_xy[1] / factor
    for x, y in np.asarray(coords_level0).reshape(-1, 2):
        draw.rectangle(
            [x / sx, y / sy, (x + tile_size_level0) / sx - 1, (y + tile_size_level0) / sy - 1],
            outline=(30, 60, 220),
        )
    return image


def save_qc(
    path: str | os.PathLike, tissue: TissueMask, coords_level0: np.ndarray, tile_size_level0: int
) -> None:
    """Write :func:`qc_image` as a PNG, atomically."""
    image = qc_image(tissue, coords_level0, tile_size_level0)
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
