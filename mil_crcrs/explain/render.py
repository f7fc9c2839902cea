"""A slide's heatmap from its tiles' values: :func:`render_heatmap`, :func:`slide_heatmaps`.

A patient with several slides gets one map per slide, all normalised over the patient's tiles
so that the maps of one patient are comparable with each other. Each map is painted over the
slide's thumbnail when the caller gives one (reading slides is
:mod:`feature_extraction.explain.pixels`'s job), else over a blank canvas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mil_crcrs.explain.paint import (
    ValueScale,
    blank_canvas,
    canvas_downsample,
    overlay,
    paint_tiles,
    smooth_map,
    value_scale,
)
from mil_crcrs.explain.scores import TileScores
from mil_crcrs.explain.settings import SIGNED_KINDS, HeatmapSettings
from mil_crcrs.explain.tiling import tile_edge_level0, tiles_extent

if TYPE_CHECKING:
    from mil_crcrs.data.store import BagInfo


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
    reference : the CRCRS the contributions are measured against (NaN when unknown)
    """

    patient_id: str
    slide_id: str
    kind: str
    image: np.ndarray
    unit_map: np.ndarray
    downsample: float
    scale: ValueScale
    cmap: str
    crcrs: float
    n_tiles: int
    reference: float = float("nan")


def render_heatmap(
    values: np.ndarray,
    coords_level0: np.ndarray,
    tile_size_level0: float,
    scale: ValueScale,
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
                    reference=scores.reference,
                )
            )
    return out
