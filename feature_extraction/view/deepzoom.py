"""Deep-zoom tiles of the slides, made on demand with OpenSlide's :class:`DeepZoomGenerator`.

Nothing is written for a whole slide: each tile is read from the slide when it is asked for
(OpenSlide picks the pyramid level) and encoded as JPEG. A slide is known by its id only; the
file behind an id was chosen when the viewer started (:func:`~.catalog.slides_in`), so no URL
names a file.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mil_crcrs.errors import first_line

#: Deep-zoom tile edge and overlap (OpenSeadragon's usual 254 + 1 + 1 = 256 px images).
TILE_SIZE = 254
OVERLAP = 1
#: JPEG quality of the tiles.
JPEG_QUALITY = 80


class SlideUnavailable(Exception):
    """A slide id that is not known, or a slide that OpenSlide cannot open (one-line message)."""


class TileNotFound(Exception):
    """A deep-zoom address outside the slide's pyramid."""


@dataclass(frozen=True)
class Pyramid:
    """A slide's deep-zoom pyramid.

    Attributes
    ----------
    width, height : level-0 size in pixels
    levels : number of deep-zoom levels (the last is level 0 of the slide)
    tile_size, overlap : deep-zoom tile edge and overlap in pixels
    """

    width: int
    height: int
    levels: int
    tile_size: int = TILE_SIZE
    overlap: int = OVERLAP

    def descriptor(self, url: str) -> dict[str, Any]:
        """OpenSeadragon's inline DZI tile source with tiles under ``url`` (``<level>/<c>_<r>``)."""
        return {
            "Image": {
                "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
                "Url": url,
                "Format": "jpeg",
                "Overlap": str(self.overlap),
                "TileSize": str(self.tile_size),
                "Size": {"Width": str(self.width), "Height": str(self.height)},
            }
        }


class DeepZoomSlides:
    """The slides' deep-zoom generators, opened on first use and kept.

    Parameters
    ----------
    files : slide id -> slide file
    """

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)
        self._open: dict[str, Any] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def _generator(self, slide_id: str) -> tuple[Any, Any]:
        if slide_id not in self.files:
            raise SlideUnavailable(f"no slide file for '{slide_id}' in the slide folder(s)")
        with self._lock:
            if slide_id in self._errors:
                raise SlideUnavailable(self._errors[slide_id])
            if slide_id not in self._open:
                self._open[slide_id] = self._make(slide_id)
            return self._open[slide_id]

    def _make(self, slide_id: str) -> tuple[Any, Any]:
        import openslide
        from openslide.deepzoom import DeepZoomGenerator

        path = self.files[slide_id]
        try:
            slide = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            message = f"slide '{slide_id}' ({path.name}) cannot be opened: {first_line(exc)}"
            self._errors[slide_id] = message
            raise SlideUnavailable(message) from None
        return slide, DeepZoomGenerator(slide, TILE_SIZE, OVERLAP, limit_bounds=False)

    def pyramid(self, slide_id: str) -> Pyramid:
        """The slide's pyramid; :class:`SlideUnavailable` when it cannot be opened."""
        _, dz = self._generator(slide_id)
        width, height = dz.level_dimensions[-1]
        return Pyramid(int(width), int(height), int(dz.level_count))

    def level_tiles(self, slide_id: str, level: int) -> tuple[int, int]:
        """(columns, rows) of deep-zoom tiles at ``level``."""
        _, dz = self._generator(slide_id)
        cols, rows = dz.level_tiles[level]
        return int(cols), int(rows)

    def tile(self, slide_id: str, level: int, col: int, row: int) -> bytes:
        """One deep-zoom tile as JPEG bytes.

        Raises
        ------
        SlideUnavailable
            for an unknown slide or one OpenSlide cannot open or read.
        TileNotFound
            for a level, column or row outside the pyramid.
        """
        import openslide

        _, dz = self._generator(slide_id)
        if not 0 <= level < dz.level_count:
            raise TileNotFound(f"level {level} not in 0..{dz.level_count - 1}")
        cols, rows = dz.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise TileNotFound(f"tile {col}_{row} not in level {level} ({cols}x{rows})")
        try:
            image = dz.get_tile(level, (col, row))
        except openslide.OpenSlideError as exc:
            raise SlideUnavailable(f"slide '{slide_id}': {first_line(exc)}") from None
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()

    def region(self, slide_id: str, x: int, y: int, size_level0: int, out_px: int) -> bytes:
        """A square region (level-0 top-left ``x``, ``y``, edge ``size_level0``) as an
        ``out_px``-px JPEG, read at the pyramid level OpenSlide finds best."""
        slide, _ = self._generator(slide_id)
        downsample = max(size_level0 / out_px, 1.0)
        level = slide.get_best_level_for_downsample(downsample)
        scale = slide.level_downsamples[level]
        edge = max(1, round(size_level0 / scale))
        image = slide.read_region((int(x), int(y)), level, (edge, edge)).convert("RGB")
        buffer = io.BytesIO()
        image.resize((out_px, out_px)).save(buffer, "JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()

    def close(self) -> None:
        """Close every open slide."""
        with self._lock:
            for slide, _ in self._open.values():
                slide.close()
            self._open.clear()
