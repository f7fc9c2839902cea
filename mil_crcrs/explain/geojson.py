"""Tiles as GeoJSON for QuPath: review a patient's attention over the full-resolution slide.

:func:`tiles_geojson` turns one slide's tiles into a GeoJSON ``FeatureCollection`` as QuPath
(0.4 and later) imports it (File > Import objects, or drag the file onto the open slide):

- each tile is a ``Feature`` whose geometry is a ``Polygon``, a closed square ring in **level-0
  pixel** coordinates (QuPath's image coordinates, y downwards);
- ``properties`` carry ``objectType: "tile"``, a ``name`` (slide and row in the feature file), a
  ``classification`` (``"raises risk"`` in red or ``"lowers risk"`` in blue, by the sign of the
  tile's contribution, or a class the caller gives per tile, e.g. its phenotype) and
  ``measurements``: ``attention`` (normalised over all of the
  patient's tiles), ``attention_x_n`` (attention times the patient's tile count; 1 = uniform),
  ``contribution`` (the tile's share of the CRCRS against the collection's
  ``contribution_reference``, the training cohort's mean CRCRS) and any extra per-tile values.

QuPath then colours tiles by any measurement (Measure > Show measurement maps).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mil_crcrs.atomic import atomic_path
from mil_crcrs.contributions import CONTRIBUTION_MEANING
from mil_crcrs.explain.scores import TileScores

#: QuPath classification of a tile by the sign of its contribution, with its RGB colour.
CLASSES = {"raises risk": [214, 39, 40], "lowers risk": [31, 119, 180]}


def tile_polygon(x: float, y: float, size: float) -> dict[str, Any]:
    """A GeoJSON Polygon: the closed square ring of a tile at level-0 top-left ``(x, y)``."""
    x0, y0, x1, y1 = float(x), float(y), float(x + size), float(y + size)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [ring]}


def tiles_geojson(
    scores: TileScores,
    slide_id: str,
    tile_size_level0: float,
    classes: Sequence[str] | None = None,
    colours: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """One slide's tiles of a patient as a QuPath-compatible GeoJSON FeatureCollection.

    Parameters
    ----------
    scores : the patient's tile scores (all slides; only ``slide_id``'s tiles are written)
    slide_id : the slide
    tile_size_level0 : tile edge in level-0 pixels
    classes : (n_tiles,) each of the patient's tiles' QuPath class (e.g. its phenotype);
        None = "raises risk" / "lowers risk" by the sign of its contribution
    colours : class -> RGB, for ``classes``

    Returns
    -------
    dict, a GeoJSON ``FeatureCollection`` (see the module docstring), in the slide file's row
    order; its ``properties`` hold the patient id, slide id, CRCRS and the contributions'
    reference
    """
    rows = scores.slide_rows(slide_id)
    extra = {kind: np.asarray(v, dtype=np.float64) for kind, v in scores.extra.items()}
    features = []
    for row_in_slide, i in enumerate(rows):
        x, y = scores.coords[i]
        contribution = float(scores.contribution[i])
        if classes is None:
            label = "raises risk" if contribution > 0 else "lowers risk"
            colour = CLASSES[label]
        else:
            label = str(classes[i])
            colour = [int(c) for c in (colours or {}).get(label, (128, 128, 128))]
        measurements = {
            "attention": float(scores.attention[i]),
            "attention_x_n": float(scores.attention[i] * scores.n_tiles),
            "contribution": contribution,
        }
        measurements.update({kind: float(v[i]) for kind, v in extra.items()})
        features.append(
            {
                "type": "Feature",
                "geometry": tile_polygon(x, y, tile_size_level0),
                "properties": {
                    "objectType": "tile",
                    "name": f"{slide_id} tile {row_in_slide}",
                    "classification": {"name": label, "color": colour},
                    "isLocked": True,
                    "measurements": measurements,
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "properties": {
            "patient_id": scores.patient_id,
            "slide_id": slide_id,
            "crcrs": float(scores.crcrs),
            "contribution_reference": float(scores.reference),
            "contribution_meaning": CONTRIBUTION_MEANING,
            "coordinates": "level-0 pixels, top-left origin, y downwards",
        },
        "features": features,
    }


def write_geojson(path: str | os.PathLike, collection: dict[str, Any]) -> None:
    """Write a GeoJSON object, atomically (compact: a slide may have 100,000 tiles)."""
    with atomic_path(path, suffix=".geojson.tmp") as tmp:
        tmp.write_text(json.dumps(collection, separators=(",", ":")) + "\n", encoding="utf-8")
