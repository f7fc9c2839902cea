"""Attention heatmaps from features: per-tile scores painted at their level-0 coords, top tiles.

Everything here works on arrays: a patient's per-tile scores from the ensemble
(:func:`tile_scores`), painted onto an RGB thumbnail the caller supplies or onto a blank canvas
(:func:`render_heatmap`); top and bottom tiles (:func:`select_tiles`); figures and PNG files
(:func:`heatmap_figure`, :func:`tile_gallery_figure`, :func:`mil_crcrs.figures.write_png`);. How well the attention
finds planted tiles is :mod:`mil_crcrs.simulate.checks`. Reading slides is
:mod:`feature_extraction.explain.heatmaps`'s job; nothing here imports openslide or timm, and matplotlib
is imported only inside the drawing functions.

Two per-tile values can be drawn, both from the **patient-level** model (a patient's slides are
one bag, so one softmax covers all of them):

- ``attention``: the fold models' mean attention, summing to 1 over the patient's tiles;
- ``contribution``: each tile's additive share of the CRCRS (exact for abmil and mean, see
  :meth:`~mil_crcrs.model_dir.CRCRSModel.patient_attention`); positive raises the risk.

A patient with several slides gets one map per slide, all normalised over the patient's tiles so
that the maps of one patient are comparable with each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError
from mil_crcrs.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mil_crcrs.data.bags import PatientBag
    from mil_crcrs.data.store import BagInfo
    from mil_crcrs.ensemble import CRCRSModel

VALUE_KINDS = ("attention", "contribution")
#: What can be painted: the model's own values, and attributions computed elsewhere (feature-level
#: integrated gradients, :mod:`feature_extraction.explain.gradcam`) passed in ``TileScores.extra``.
MAP_KINDS = (*VALUE_KINDS, "integrated_gradients")
SIGNED_KINDS = ("contribution", "integrated_gradients")
#: Colormap of each kind when none is given: sequential for attention, diverging (red = raises
#: the risk, blue = lowers it, white = no effect) for the signed values.
DEFAULT_CMAPS = {"attention": "inferno", "contribution": "RdBu_r", "integrated_gradients": "RdBu_r"}
BACKGROUND_RGB = (255, 255, 255)


@dataclass(frozen=True)
class HeatmapSettings:
    """How heatmaps are painted and which tiles are shown (saved with the outputs).

    Parameters
    ----------
    maps : the value kinds to draw per slide ("attention", "contribution", and
        "integrated_gradients" where the scores carry them)
    cmap : a matplotlib colormap name for every map; None = :data:`DEFAULT_CMAPS` per kind
    alpha : opacity of the colours over the thumbnail, in [0, 1]
    percentiles : (low, high) percentiles of the patient's tile values mapped to the two ends of
        the colormap (values outside are clipped); for the signed contributions only ``high`` is
        used, on their absolute values, and zero sits in the middle
    smooth : standard deviation of a Gaussian smoothing of the painted map, in tiles (0 = none);
        smoothing never spreads colour outside the tiles
    max_side_px : longest side of a heatmap canvas in pixels (the thumbnail's resolution)
    top_k : number of top and of bottom tiles to select per patient
    by : rank tiles by "attention" or by "contribution" to the risk
    """

    maps: tuple[str, ...] = VALUE_KINDS
    cmap: str | None = None
    alpha: float = 0.5
    percentiles: tuple[float, float] = (1.0, 99.0)
    smooth: float = 0.0
    max_side_px: int = 2048
    top_k: int = 8
    by: str = "attention"

    def __post_init__(self) -> None:
        object.__setattr__(self, "maps", tuple(self.maps))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        unknown = [m for m in self.maps if m not in MAP_KINDS]
        if unknown or not self.maps:
            raise InputError(f"heatmap maps must be among {', '.join(MAP_KINDS)}, got {self.maps}")
        if self.by not in VALUE_KINDS:
            raise InputError(f"--by must be one of {', '.join(VALUE_KINDS)}, got {self.by!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"--alpha must be in [0, 1], got {self.alpha}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got {(lo, hi)}")
        if not self.smooth >= 0.0:
            raise InputError(f"--smooth must be >= 0 (tiles), got {self.smooth}")
        if self.max_side_px < 16:
            raise InputError(f"max_side_px must be at least 16, got {self.max_side_px}")
        if self.top_k < 0:
            raise InputError(f"--top-k must be >= 0, got {self.top_k}")
        if self.cmap is not None:
            colormap(self.cmap)  # fails early on an unknown name

    def cmap_for(self, kind: str) -> str:
        """The colormap name used for value ``kind``."""
        return self.cmap or DEFAULT_CMAPS[kind]


# --------------------------------------------------------------------------------------------
# Per-tile scores of one patient


@dataclass(frozen=True)
class TileScores:
    """One patient's per-tile scores from the model ensemble.

    Attributes
    ----------
    patient_id : str
    crcrs : the patient's CRCRS
    slide_ids : the patient's slides, in bag order
    tile_slide : (n_tiles,) int64 index into ``slide_ids`` of each tile's slide
    coords : (n_tiles, 2) int64 level-0 top-left (x, y); -1 where a file has no coords
    attention : (n_tiles,) float64, sums to 1 over all of the patient's tiles
    contribution : (n_tiles,) float64, each tile's additive share of the risk
    extra : other per-tile values by kind, e.g. ``{"integrated_gradients": (n_tiles,)}``
    """

    patient_id: str
    crcrs: float
    slide_ids: tuple[str, ...]
    tile_slide: np.ndarray
    coords: np.ndarray
    attention: np.ndarray
    contribution: np.ndarray
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_tiles(self) -> int:
        return int(self.attention.shape[0])

    def values(self, kind: str) -> np.ndarray:
        """(n_tiles,) the ``kind`` ("attention", "contribution" or an extra kind) of every tile."""
        if kind == "attention":
            return self.attention
        if kind == "contribution":
            return self.contribution
        if kind in self.extra:
            return np.asarray(self.extra[kind], dtype=np.float64)
        raise ValueError(f"no per-tile {kind!r} values for patient {self.patient_id}")

    def slide_rows(self, slide_id: str) -> np.ndarray:
        """(n,) bag indices of the tiles of ``slide_id``, in the slide file's row order."""
        return np.flatnonzero(self.tile_slide == self.slide_ids.index(slide_id))

    def row_in_slide(self) -> np.ndarray:
        """(n_tiles,) each tile's row in its own slide's feature file."""
        rows = np.empty(self.n_tiles, dtype=np.int64)
        for k in range(len(self.slide_ids)):
            idx = np.flatnonzero(self.tile_slide == k)
            rows[idx] = np.arange(idx.size)
        return rows


def tile_scores(model: CRCRSModel, bag: PatientBag) -> TileScores:
    """The ensemble's CRCRS, attention and contributions for every tile of one patient.

    Parameters
    ----------
    model : the trained ensemble
    bag : the patient's tiles (all slides), scored where the model is

    Returns
    -------
    TileScores
    """
    crcrs, attention, contribution = model.patient_attention(bag)
    return TileScores(
        patient_id=bag.patient_id,
        crcrs=float(crcrs),
        slide_ids=tuple(bag.slide_ids),
        tile_slide=np.asarray(bag.tile_slide, dtype=np.int64),
        coords=np.asarray(bag.coords, dtype=np.int64),
        attention=np.asarray(attention, dtype=np.float64),
        contribution=np.asarray(contribution, dtype=np.float64),
    )


# --------------------------------------------------------------------------------------------
# Normalisation and painting


@dataclass(frozen=True)
class Scale:
    """How values were mapped onto [0, 1]: ``low`` maps to 0 and ``high`` to 1."""

    low: float
    high: float

    def __call__(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if not self.high > self.low:
            return np.full(values.shape, 0.5)
        return np.clip((values - self.low) / (self.high - self.low), 0.0, 1.0)


def value_scale(values: np.ndarray, percentiles: tuple[float, float], signed: bool) -> Scale:
    """The percentile normalisation of ``values`` (n,).

    Unsigned: the ``percentiles`` (low, high) of the values go to 0 and 1. Signed: with ``m``
    the ``high`` percentile of ``|values|``, ``[-m, m]`` goes to [0, 1], so zero sits at 0.5.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Scale(0.0, 1.0)
    if signed:
        m = float(np.percentile(np.abs(values), percentiles[1]))
        return Scale(-m, m)
    low, high = np.percentile(values, percentiles)
    return Scale(float(low), float(high))


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


@dataclass(frozen=True)
class SlideHeatmap:
    """One slide's painted heatmap.

    Attributes
    ----------
    patient_id, slide_id : whose map
    kind : "attention" or "contribution"
    image : (H, W, 3) uint8, the colours over the thumbnail (or blank canvas)
    unit_map : (H, W) float64 in [0, 1], NaN where no tile is
    downsample : level-0 pixels per image pixel
    scale : the value normalisation (shared by the patient's slides)
    cmap : the colormap
    crcrs : the patient's CRCRS
    n_tiles : tiles painted
    """

    patient_id: str
    slide_id: str
    kind: str
    image: np.ndarray
    unit_map: np.ndarray
    downsample: float
    scale: Scale
    cmap: str
    crcrs: float
    n_tiles: int


def render_heatmap(
    values: np.ndarray,
    coords_level0: np.ndarray,
    tile_size_level0: float,
    scale: Scale,
    settings: HeatmapSettings,
    kind: str = "attention",
    *,
    background: np.ndarray | None = None,
    downsample: float | None = None,
    level0_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Paint one slide's tile values over a thumbnail or a blank canvas.

    Parameters
    ----------
    values : (n_tiles,) the slide's tile values
    coords_level0 : (n_tiles, 2) their level-0 top-left (x, y)
    tile_size_level0 : tile edge in level-0 pixels
    scale : maps values to [0, 1] (usually computed over all of the patient's tiles)
    settings : colormap, alpha, smoothing, canvas size
    kind : the value kind (chooses the default colormap)
    background : (H, W, 3) uint8 thumbnail of the slide, or None for a blank canvas
    downsample : level-0 pixels per thumbnail pixel (required with ``background``)
    level0_size : (width, height) of the slide in level-0 pixels (for a blank canvas; default:
        the extent of the tiles)

    Returns
    -------
    image : (H, W, 3) uint8
    unit_map : (H, W) float64 in [0, 1] or NaN
    downsample : level-0 pixels per image pixel
    """
    coords = np.asarray(coords_level0)
    if background is None:
        if level0_size is None:
            level0_size = tiles_extent(coords, tile_size_level0)
        width0, height0 = level0_size
        downsample = downsample or canvas_downsample(width0, height0, settings.max_side_px)
        background = blank_canvas(width0, height0, downsample)
    elif downsample is None:
        raise ValueError("render_heatmap(background=...) needs the thumbnail's downsample")
    painted = paint_tiles(scale(values), coords, tile_size_level0, background.shape[:2], downsample)
    painted = smooth_map(painted, settings.smooth * tile_size_level0 / downsample)
    image = overlay(painted, background, settings.cmap_for(kind), settings.alpha)
    return image, painted, float(downsample)


def tiles_extent(coords_level0: np.ndarray, tile_size_level0: float) -> tuple[int, int]:
    """(width, height) in level-0 pixels reaching past the last tile by one tile."""
    if coords_level0.size == 0:
        return (int(tile_size_level0), int(tile_size_level0))
    far = coords_level0.max(axis=0) + 2 * tile_size_level0
    return int(far[0]), int(far[1])


def slide_heatmaps(
    scores: TileScores,
    infos: Mapping[str, BagInfo],
    settings: HeatmapSettings = HeatmapSettings(),
    thumbnails: Mapping[str, tuple[np.ndarray, float]] | None = None,
) -> list[SlideHeatmap]:
    """One heatmap per slide of a patient and per value kind in ``settings.maps``.

    Parameters
    ----------
    scores : the patient's tile scores (one softmax over all of their slides)
    infos : slide id -> the feature file's :class:`~mil_crcrs.data.store.BagInfo` (tile size and
        level-0 extent)
    settings : how to paint
    thumbnails : slide id -> ((H, W, 3) uint8 thumbnail, level-0 pixels per thumbnail pixel);
        a slide without one is painted on a blank canvas

    Returns
    -------
    list of SlideHeatmap, slide by slide, kinds in ``settings.maps`` order

    Raises
    ------
    InputError
        if a feature file has no coords or no tile size.
    """
    thumbnails = thumbnails or {}
    out = []
    for kind in settings.maps:
        values = scores.values(kind)
        scale = value_scale(values, settings.percentiles, signed=kind in SIGNED_KINDS)
        for slide_id in scores.slide_ids:
            info = infos[slide_id]
            rows = scores.slide_rows(slide_id)
            tile = tile_edge_level0(info, scores.coords[rows])
            if info.level0_width and info.level0_height:
                level0_size = (info.level0_width, info.level0_height)
            else:
                level0_size = tiles_extent(scores.coords[rows], tile)
            background, downsample = thumbnails.get(slide_id, (None, None))
            image, unit_map, downsample = render_heatmap(
                values[rows],
                scores.coords[rows],
                tile,
                scale,
                settings,
                kind,
                background=background,
                downsample=downsample,
                level0_size=level0_size,
            )
            out.append(
                SlideHeatmap(
                    patient_id=scores.patient_id,
                    slide_id=slide_id,
                    kind=kind,
                    image=image,
                    unit_map=unit_map,
                    downsample=downsample,
                    scale=scale,
                    cmap=settings.cmap_for(kind),
                    crcrs=scores.crcrs,
                    n_tiles=int(rows.size),
                )
            )
    return out


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
        if the coordinates are unknown, or neither recorded nor guessable.
    """
    check_coords_known(info, coords)
    if info.tile_size_level0:
        return float(info.tile_size_level0)
    # CLAM and others may not record it: the grid step is the best guess.
    steps = [np.diff(np.unique(coords[:, axis])) for axis in (0, 1)]
    steps = np.concatenate([s[s > 0] for s in steps])
    if steps.size == 0:
        raise InputError(
            f"{info.path}: the feature file records no tile size; cannot draw a map "
            "(give --tile-size)"
        )
    return float(steps.min())


@dataclass(frozen=True)
class TileSize:
    """A tile edge stated by the user for feature files that do not record it (``--tile-size``).

    Parameters
    ----------
    px : the tile edge in pixels
    mpp : the resolution of those pixels in microns per pixel; None = level-0 pixels
    """

    px: int
    mpp: float | None = None

    def __post_init__(self) -> None:
        if self.px < 1:
            raise InputError(f"--tile-size must be a positive number of pixels, got {self.px}")
        if self.mpp is not None and not self.mpp > 0:
            raise InputError(f"--tile-size resolution must be positive um/px, got {self.mpp}")

    @classmethod
    def parse(cls, text: str) -> TileSize:
        """``"256"`` (level-0 pixels) or ``"224@0.5"`` (224 pixels at 0.5 um/px)."""
        size, at, mpp = str(text).partition("@")
        try:
            return cls(int(size), float(mpp) if at else None)
        except ValueError:
            raise InputError(
                f"--tile-size must be PX (level-0 pixels) or PX@MPP (pixels at MPP um/px), "
                f"e.g. 256 or 224@0.5; got {text!r}"
            ) from None

    def __str__(self) -> str:
        return f"{self.px}" if self.mpp is None else f"{self.px}@{self.mpp:g}"

    def level0(self, slide_mpp: float | None, source: str) -> int:
        """The edge in level-0 pixels, given the slide's level-0 resolution (um/px)."""
        if self.mpp is None:
            return self.px
        if not slide_mpp:
            raise InputError(
                f"{source}: --tile-size {self} needs the slide's resolution, which neither the "
                "feature file nor a slide file gives; give --slides or the size in level-0 px"
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
    ``patch_level`` without ``downsample``) gets it from the slide's ``level_downsamples``; a
    file that names none gets ``tile_size``. A stated size that contradicts the file's own is an
    error, never silently preferred.

    Parameters
    ----------
    info : the feature file's description
    tile_size : the user's ``--tile-size``, or None
    slide_mpp : the slide's level-0 resolution (um/px) when a slide file is open
    level_downsamples : the open slide's downsample of each level

    Returns
    -------
    BagInfo with ``tile_size_level0`` and ``tile_size_px`` set where they can be known
    """
    size0, size_px = info.tile_size_level0, info.tile_size_px
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
            raise InputError(
                f"{info.path}: the file records tiles of {size0} level-0 px but --tile-size "
                f"{tile_size} is {stated} level-0 px; drop --tile-size or correct it"
            )
        size0 = size0 or stated
        if size_px is None:
            size_px = tile_size.px if tile_size.mpp is not None else stated
    return replace(info, tile_size_level0=size0, tile_size_px=size_px)


# --------------------------------------------------------------------------------------------
# Top and bottom tiles


def select_tiles(scores: TileScores, k: int = 8, by: str = "attention") -> pd.DataFrame:
    """The ``k`` top and ``k`` bottom tiles of a patient, ranked by attention or contribution.

    Top by attention are the most attended tiles, bottom the least; top by contribution are the
    tiles that raise the risk most, bottom those that lower it most. A tile is never in both
    groups (with fewer than ``2 k`` tiles the bottom group is smaller). Ties keep bag order.

    Returns
    -------
    DataFrame with one row per selected tile: ``patient_id``, ``group`` ("top"/"bottom"),
    ``rank`` (1 = most extreme), ``slide_id``, ``tile`` (row in the slide's feature file),
    ``bag_index`` (row in the patient's bag), ``x``, ``y`` (level-0), ``attention``,
    ``contribution``, ``crcrs``.
    """
    if by not in VALUE_KINDS:
        raise InputError(f"--by must be one of {', '.join(VALUE_KINDS)}, got {by!r}")
    values = scores.values(by)
    order = np.argsort(-values, kind="stable")
    k_top = min(k, scores.n_tiles)
    k_bottom = min(k, scores.n_tiles - k_top)
    top = order[:k_top]
    bottom = np.argsort(values, kind="stable")
    bottom = bottom[~np.isin(bottom, top)][:k_bottom]
    rows_in_slide = scores.row_in_slide()
    records = []
    for group, picked in (("top", top), ("bottom", bottom)):
        for rank, i in enumerate(picked, start=1):
            records.append(
                {
                    "patient_id": scores.patient_id,
                    "group": group,
                    "rank": rank,
                    "slide_id": scores.slide_ids[scores.tile_slide[i]],
                    "tile": int(rows_in_slide[i]),
                    "bag_index": int(i),
                    "x": int(scores.coords[i, 0]),
                    "y": int(scores.coords[i, 1]),
                    "attention": float(scores.attention[i]),
                    "contribution": float(scores.contribution[i]),
                    "crcrs": scores.crcrs,
                }
            )
    columns = [
        "patient_id",
        "group",
        "rank",
        "slide_id",
        "tile",
        "bag_index",
        "x",
        "y",
        "attention",
        "contribution",
        "crcrs",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


# --------------------------------------------------------------------------------------------
# Figures and files


def heatmap_figure(heatmap: SlideHeatmap, title: str | None = None) -> Figure:
    """The heatmap with a colorbar labelled in the values' own units, and a title.

    The figure is laid out in inches around the image's own aspect ratio, so the image fills its
    axes: no blank band above or below it, however wide or tall the slide.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    height, width = heatmap.image.shape[:2]
    dpi = 100
    # Longest side 400-1400 px: small canvases are enlarged (nearest), large ones reduced.
    scale = min(1400.0 / max(width, height), max(1.0, 400.0 / max(width, height)))
    img_w, img_h = width * scale / dpi, height * scale / dpi
    pad, title_h, gap, bar_w, labels_w = 0.1, 0.6, 0.25, 0.2, 1.2
    fig_w = pad + img_w + gap + bar_w + labels_w
    fig_h = pad + img_h + title_h
    fig = new_figure(fig_w, fig_h, dpi=dpi)
    ax = fig.add_axes((pad / fig_w, pad / fig_h, img_w / fig_w, img_h / fig_h))
    ax.imshow(heatmap.image, interpolation="nearest", aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():  # a thin frame shows the slide's extent on a blank canvas
        spine.set_edgecolor("#bbbbbb")
    bar_h = min(img_h, 4.0)
    cax = fig.add_axes(
        (
            (pad + img_w + gap) / fig_w,
            (pad + (img_h - bar_h) / 2) / fig_h,
            bar_w / fig_w,
            bar_h / fig_h,
        )
    )
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormap(heatmap.cmap)), cax=cax)
    ticks = np.linspace(0.0, 1.0, 5 if bar_h >= 2.0 else 3)
    s = heatmap.scale
    bar.set_ticks(ticks, labels=tick_labels(s.low + ticks * (s.high - s.low)))
    labels = {
        "contribution": "contribution to risk",
        "integrated_gradients": "integrated gradients",
    }
    bar.set_label(labels.get(heatmap.kind, heatmap.kind))
    fig.suptitle(
        title
        or f"{heatmap.patient_id} / {heatmap.slide_id}\n{heatmap.kind}, "
        f"CRCRS {heatmap.crcrs:.3f}, {heatmap.n_tiles} tiles",
        fontsize=10,
        y=1.0 - 0.08 / fig_h,
        va="top",
    )
    return fig


def tick_labels(values: np.ndarray) -> list[str]:
    """The shortest labels (3 to 8 significant digits) that tell distinct ``values`` apart."""
    for digits in range(3, 9):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(set(np.round(values, 12))):
            return labels
    return labels


def tile_gallery_figure(
    rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[str]]], tile_inches: float = 1.6
) -> Figure:
    """Rows of tile images with a caption under each tile.

    Caption lines too long for a tile's width are wrapped (at hyphens and dots first, as in
    slide ids) and rows are spaced for the longest caption, so captions never overlap each other
    or the next row.

    Parameters
    ----------
    rows : per row, (row title, tile images (h, w, 3) uint8, one caption per tile)
    tile_inches : the drawn size of a tile

    Returns
    -------
    Figure
    """
    rows = [r for r in rows if len(r[1])]
    n_cols = max((len(r[1]) for r in rows), default=1)
    n_rows = max(1, len(rows))
    font, gap = 7, 0.15
    chars = max(8, int((tile_inches + 0.8 * gap) * 72 / (0.62 * font)))
    wrapped = [[_wrap_caption(c, chars) for c in r[2]] for r in rows]
    n_lines = max((c.count("\n") + 1 for r in wrapped for c in r), default=1)
    top, title_h, caption_h = 0.5, 0.3, 0.1 + n_lines * font * 1.3 / 72
    row_h = title_h + tile_inches + caption_h
    fig_w = 0.4 + n_cols * tile_inches + (n_cols - 1) * gap
    fig_h = top + n_rows * row_h
    fig = new_figure(fig_w, fig_h, dpi=100)
    for r, ((title, images, _), captions) in enumerate(zip(rows, wrapped, strict=True)):
        bottom = fig_h - top - r * row_h - title_h - tile_inches
        for c, (image, caption) in enumerate(zip(images, captions, strict=True)):
            left = 0.2 + c * (tile_inches + gap)
            ax = fig.add_axes(
                (left / fig_w, bottom / fig_h, tile_inches / fig_w, tile_inches / fig_h)
            )
            ax.imshow(image, interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(caption, fontsize=font, labelpad=3)
            if c == 0:
                ax.set_title(title, fontsize=9, loc="left")
    if not rows:
        fig.text(0.5, 0.5, "no tiles", ha="center")
    return fig


def _wrap_caption(caption: str, width: int) -> str:
    """``caption`` with every line wrapped to ``width`` characters (ids broken after - . _)."""
    import re

    out = []
    for line in caption.split("\n"):
        current = ""
        for token in re.findall(r"[^-._ ]*[-._ ]|[^-._ ]+$", line):
            while len(token) > width:  # a piece longer than a line is cut
                if current:
                    out.append(current.rstrip())
                    current = ""
                out.append(token[:width])
                token = token[width:]
            if len((current + token).rstrip()) > width:
                out.append(current.rstrip())
                current = ""
            current += token
        out.append(current.rstrip())
    return "\n".join(out)
