"""The viewer's site: every document the page loads, by relative URL, for the server and export.

The page (``static/index.html``) loads the same relative URLs from the server
(:mod:`.app`) and from a static export (:mod:`.export`), so both show the same thing:

- ``data.js``: the patient list and each slide's deep-zoom descriptor (or why it cannot open);
- ``slides/<key>.js``: one slide's tiles, scores, legends and top tiles
  (:func:`~.overlays.slide_payload`);
- ``dzi/<key>_files/<level>/<col>_<row>.jpeg``: deep-zoom tiles;
- ``overlay/<key>/<kind>.png``: the colour overlays;
- ``region/<key>/<bag_index>.jpg``: the top tiles' pictures.

Slides are addressed by a key (``s0``, ``s1``, ... in list order), never by a file name or id, so
no URL can name a file; ids appear only as data, which the page writes as text.
Scripts, not JSON, carry the data so that a page opened from ``file://`` can load them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from feature_extraction.view.catalog import PatientRow
from feature_extraction.view.deepzoom import DeepZoomSlides, SlideUnavailable
from feature_extraction.view.overlays import overlay_geometry, overlay_png, slide_payload
from feature_extraction.view.phenotypes import Phenotypes, phenotype_png
from mil_crcrs.explain.scores import VALUE_KINDS, TileScores
from mil_crcrs.explain.settings import HeatmapSettings

#: Edge in pixels of a top tile's picture.
REGION_PX = 160


class ScoreSource(Protocol):
    """Where the numbers come from (:class:`~.catalog.ModelScores` or
    :class:`~.catalog.AttentionFileScores`)."""

    time_unit: str | None

    def patients(self) -> list[PatientRow]: ...
    def scores(self, patient_id: str) -> TileScores: ...
    def tile_edge(self, slide_id: str, coords: np.ndarray) -> float: ...
    def level0_size(self, slide_id: str) -> tuple[int, int] | None: ...
    def reference(self) -> float | None: ...


@dataclass(frozen=True)
class SlideEntry:
    """One slide in the list: its key in URLs, its id and its patient."""

    key: str
    slide_id: str
    patient_id: str


class Site:
    """Builds the viewer's documents from a score source and the slide files.

    Parameters
    ----------
    source : the scores
    files : slide id -> slide file (found inside the slide folders)
    settings : percentiles, colormaps and the number of top tiles
    phenotypes : a class name per tile for the third overlay, or None
    """

    def __init__(
        self,
        source: ScoreSource,
        files: Mapping[str, Path],
        settings: HeatmapSettings = HeatmapSettings(),
        phenotypes: Phenotypes | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.phenotypes = phenotypes
        self.deepzoom = DeepZoomSlides(files)
        self.patients = source.patients()
        entries = [(sid, p.patient_id) for p in self.patients for sid in p.slides]
        self.slides = {
            f"s{i}": SlideEntry(f"s{i}", sid, pid) for i, (sid, pid) in enumerate(entries)
        }

    @property
    def kinds(self) -> list[str]:
        """The overlays: the model's values, and the phenotypes when given."""
        return [*VALUE_KINDS, *(["phenotype"] if self.phenotypes is not None else [])]

    def entry(self, key: str) -> SlideEntry:
        """The slide with URL key ``key``; :class:`KeyError` for an unknown key."""
        return self.slides[key]

    def data_js(
        self, keys: Sequence[str] | None = None, max_levels: Mapping[str, int] | None = None
    ) -> str:
        """``data.js``: patients, slides and their deep-zoom descriptors.

        ``keys`` limits the slides (None = all; the patient list stays whole); ``max_levels``
        caps a slide's pyramid (export: key -> the deepest level written)."""
        slides = {}
        for key in self.slides if keys is None else keys:
            entry = self.slides[key]
            record: dict[str, Any] = {"slide_id": entry.slide_id, "patient_id": entry.patient_id}
            try:
                pyramid = self.deepzoom.pyramid(entry.slide_id)
            except SlideUnavailable as exc:
                record["error"] = str(exc)
            else:
                record["width"], record["height"] = pyramid.width, pyramid.height
                shown = pyramid
                if max_levels and key in max_levels:
                    shown = export_pyramid(pyramid, max_levels[key])
                record["dzi"] = shown.descriptor(f"dzi/{key}_files/")
            slides[key] = record
        data = {
            "patients": [_patient(p) for p in self.patients],
            "slides": slides,
            "time_unit": self.source.time_unit,
            "kinds": self.kinds,
            "phenotypes": None
            if self.phenotypes is None
            else {"classes": list(self.phenotypes.classes), "colours": self.phenotypes.colours()},
        }
        return "window.CRCRS_VIEW = " + _json(data) + ";\n"

    def slide_js(self, key: str) -> str:
        """``slides/<key>.js``: the slide's tiles, scores, legends and top tiles."""
        return f"window.crcrsSlide({_json(self.payload(key))});\n"

    def payload(self, key: str) -> dict[str, Any]:
        """What ``slides/<key>.js`` holds (:func:`~.overlays.slide_payload`, with the key of
        each top tile's slide, or the slide's one-line ``error``)."""
        entry = self.entry(key)
        payload: dict[str, Any] = {"key": key}
        try:
            payload.update(self._payload(entry))
        except SlideUnavailable as exc:
            payload["error"] = str(exc)
        top_keys = {e.slide_id: k for k, e in self.slides.items()}
        for tile in payload.get("top", []):
            tile["key"] = top_keys.get(tile["slide_id"])
        return payload

    def _payload(self, entry: SlideEntry) -> dict[str, Any]:
        scores, size, edge = self._geometry(entry)
        payload = slide_payload(
            scores, entry.slide_id, size, edge, self.source.reference(), self.settings
        )
        if self.phenotypes is not None:
            coords = scores.coords[scores.slide_rows(entry.slide_id)]
            payload["phenotype"] = self.phenotypes.of(entry.slide_id, coords).tolist()
        return payload

    def _geometry(self, entry: SlideEntry) -> tuple[TileScores, tuple[int, int], float]:
        """The patient's scores, the slide's level-0 (width, height) and its tile edge;
        :class:`SlideUnavailable` for a slide of another size than its features were made from
        (the wrong slide: its scores would be drawn in the wrong places)."""
        scores = self.source.scores(entry.patient_id)
        pyramid = self.deepzoom.pyramid(entry.slide_id)
        size = (pyramid.width, pyramid.height)
        recorded = self.source.level0_size(entry.slide_id)
        if recorded is not None and recorded != size:
            raise SlideUnavailable(
                f"slide '{entry.slide_id}' is {size[0]}x{size[1]} px but its features were "
                f"made from a {recorded[0]}x{recorded[1]} px slide; is it the right slide? "
                "(its scores are not drawn)"
            )
        coords = scores.coords[scores.slide_rows(entry.slide_id)]
        return scores, size, self.source.tile_edge(entry.slide_id, coords)

    def overlay(self, key: str, kind: str) -> bytes:
        """``overlay/<key>/<kind>.png``; :class:`KeyError` for an unknown key or kind."""
        if kind not in self.kinds:
            raise KeyError(kind)
        entry = self.entry(key)
        scores, size, edge = self._geometry(entry)
        if kind != "phenotype":
            return overlay_png(scores, entry.slide_id, kind, size, edge, self.settings)
        assert self.phenotypes is not None  # self.kinds has "phenotype" only then
        coords = scores.coords[scores.slide_rows(entry.slide_id)]
        labels = self.phenotypes.of(entry.slide_id, coords)
        downsample, shape = overlay_geometry(*size, edge)
        return phenotype_png(labels, coords, edge, shape, downsample, self.phenotypes.colours())

    def region(self, key: str, bag_index: int) -> bytes:
        """``region/<key>/<bag_index>.jpg``: the picture of one of the slide's tiles."""
        entry = self.entry(key)
        scores, _, edge = self._geometry(entry)
        mine = 0 <= bag_index < scores.n_tiles
        if not mine or scores.slide_ids[scores.tile_slide[bag_index]] != entry.slide_id:
            raise KeyError(bag_index)
        x, y = (int(v) for v in scores.coords[bag_index])
        return self.deepzoom.region(entry.slide_id, x, y, int(round(edge)), REGION_PX)


def export_pyramid(pyramid: Any, max_level: int) -> Any:
    """The pyramid cut at deep-zoom level ``max_level`` (a smaller image, the same tiles)."""
    from dataclasses import replace

    top = pyramid.levels - 1
    width, height = pyramid.width, pyramid.height
    for _ in range(top - max_level):
        width, height = (width + 1) // 2, (height + 1) // 2
    return replace(pyramid, width=width, height=height, levels=max_level + 1)


def _patient(row: PatientRow) -> dict[str, Any]:
    return {
        "patient_id": row.patient_id,
        "slides": list(row.slides),
        "crcrs": row.crcrs,
        "risk_group": row.risk_group,
        "time": row.time,
        "event": row.event,
    }


def _json(data: Any) -> str:
    """JSON safe inside a script: ``<``, ``>`` and ``&`` escaped so no id can close the tag."""
    text = json.dumps(data, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
