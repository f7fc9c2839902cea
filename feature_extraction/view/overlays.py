"""A slide's overlays for the page: each tile's scores, the colour images and their legends.

The values are the project's own (:class:`~mil_crcrs.explain.scores.TileScores`, from the
model's ``risk()`` or the attention files); the colours come from the same normalisation and
painting as ``crcrs heatmap`` (:func:`~mil_crcrs.explain.paint.value_scale` over the patient's
tiles, :func:`~mil_crcrs.explain.paint.paint_tiles`, the kind's colormap), drawn as a small RGBA
image (transparent where there is no tile) that the page lays over the slide.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from mil_crcrs.explain.paint import canvas_downsample, canvas_shape, paint_tiles, value_scale
from mil_crcrs.explain.scores import VALUE_KINDS, TileScores, select_tiles
from mil_crcrs.explain.settings import SIGNED_KINDS, HeatmapSettings

#: Canvas pixels per tile edge of an overlay image (its longest side is capped at
#: :data:`MAX_OVERLAY_SIDE_PX`).
PIXELS_PER_TILE = 4
MAX_OVERLAY_SIDE_PX = 4096
#: What each value kind means, for the legend.
MEANINGS = {
    "attention": "share of the model's attention (x uniform: 1 = every tile alike)",
    "contribution": "the tile's additive share of the CRCRS (red raises the risk, blue lowers it)",
}


def overlay_geometry(width: int, height: int, tile_edge: float) -> tuple[float, tuple[int, int]]:
    """Level-0 pixels per overlay pixel and the overlay's (height, width) for a slide of
    ``width`` x ``height`` level-0 pixels with tiles of ``tile_edge`` level-0 pixels."""
    downsample = max(
        tile_edge / PIXELS_PER_TILE, canvas_downsample(width, height, MAX_OVERLAY_SIDE_PX), 1.0
    )
    return downsample, canvas_shape(width, height, downsample)


def overlay_png(
    scores: TileScores,
    slide_id: str,
    kind: str,
    size: tuple[int, int],
    tile_edge: float,
    settings: HeatmapSettings = HeatmapSettings(),
) -> bytes:
    """The RGBA PNG of one slide's ``kind`` values: the colormap where a tile is, transparent
    elsewhere; the scale covers all of the patient's tiles (as ``crcrs heatmap`` draws them).

    Parameters
    ----------
    scores : the patient's tile scores
    slide_id : which of the patient's slides
    kind : "attention" or "contribution"
    size : (width, height) of the slide in level-0 pixels
    tile_edge : tile edge in level-0 pixels
    settings : percentiles and colormaps
    """
    from PIL import Image

    from mil_crcrs.explain.paint import colormap

    scale = value_scale(scores.values(kind), settings.percentiles, kind in SIGNED_KINDS)
    rows = scores.slide_rows(slide_id)
    downsample, shape = overlay_geometry(*size, tile_edge)
    unit = paint_tiles(
        scale(scores.values(kind)[rows]), scores.coords[rows], tile_edge, shape, downsample
    )
    painted = np.isfinite(unit)
    rgba = colormap(settings.cmap_for(kind))(np.where(painted, unit, 0.0))
    rgba = np.round(rgba * 255).astype(np.uint8)
    rgba[..., 3] = np.where(painted, 255, 0)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    return buffer.getvalue()


def legend(scores: TileScores, kind: str, settings: HeatmapSettings) -> dict[str, Any]:
    """The legend of one overlay: colour stops and the values at the two ends."""
    from mil_crcrs.explain.paint import colormap

    scale = value_scale(scores.values(kind), settings.percentiles, kind in SIGNED_KINDS)
    cmap = colormap(settings.cmap_for(kind))
    stops = [
        "#" + "".join(f"{round(c * 255):02x}" for c in cmap(t)[:3]) for t in np.linspace(0, 1, 9)
    ]
    factor = scores.n_tiles if kind == "attention" else 1.0  # attention shown x uniform
    return {
        "kind": kind,
        "cmap": settings.cmap_for(kind),
        "colours": stops,
        "low": scale.low * factor,
        "high": scale.high * factor,
        "meaning": MEANINGS.get(kind, kind),
        "percentiles": list(settings.percentiles),
    }


def slide_payload(
    scores: TileScores,
    slide_id: str,
    size: tuple[int, int],
    tile_edge: float,
    reference: float | None,
    settings: HeatmapSettings = HeatmapSettings(),
) -> dict[str, Any]:
    """Everything the page needs about one slide's tiles (no pixels).

    Returns
    -------
    dict with ``slide_id``, ``patient_id``, ``crcrs``, ``n_patient_tiles``, ``tile_edge``
    (level-0 px), ``tiles`` (one ``[x, y, row, attention, contribution]`` per tile of the slide:
    level-0 top-left, row in the slide's feature file), ``legends`` (per kind), ``overlay_width``
    (the overlay image's width as a fraction of the slide's), ``top`` (the patient's top tiles
    by attention: slide id, bag index, x, y, attention, contribution) and ``reference``.
    """
    rows = scores.slide_rows(slide_id)
    in_slide = scores.row_in_slide()
    tiles = [
        [
            int(scores.coords[i, 0]),
            int(scores.coords[i, 1]),
            int(in_slide[i]),
            float(scores.attention[i]),
            float(scores.contribution[i]),
        ]
        for i in rows
    ]
    downsample, (_, width_px) = overlay_geometry(*size, tile_edge)
    top = select_tiles(scores, settings.top_k, "attention")
    top = top[top["group"] == "top"]
    return {
        "slide_id": slide_id,
        "patient_id": scores.patient_id,
        "crcrs": scores.crcrs,
        "n_patient_tiles": scores.n_tiles,
        "tile_edge": float(tile_edge),
        "tiles": tiles,
        "legends": {kind: legend(scores, kind, settings) for kind in VALUE_KINDS},
        "overlay_width": width_px * downsample / size[0],
        "top": top[["slide_id", "bag_index", "x", "y", "attention", "contribution"]].to_dict(
            "records"
        ),
        "reference": reference,
    }
