"""``crcrs view --export DIR``: the viewer as a folder of files, opened from disk (``file://``).

The export writes the same documents the server serves (:mod:`.site`), under the same relative
URLs, for the chosen slides: the page and its scripts, ``data.js``, each slide's scores, its
overlays and top-tile pictures, and its deep-zoom tiles down to the level whose longest side is
at most ``max_side_px`` (the export's size bound: a slide's tiles hold at most about
``4/3 * max_side_px**2`` pixels as JPEG, a few MB at the default), and at most
:data:`EXPORT_MAX_SLIDES` slides. The folder is built aside and moved into place whole; a re-export drops the files of the export
it replaces, even for slides no longer chosen (:func:`~mil_crcrs.atomic.output_dir`).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from feature_extraction.view.deepzoom import Pyramid, SlideUnavailable
from feature_extraction.view.site import Site
from mil_crcrs.atomic import output_dir, refuse_overwrite
from mil_crcrs.errors import SettingError

#: Longest side of an exported slide's deepest level, in pixels, unless told.
EXPORT_MAX_SIDE_PX = 4096
#: The most slides one export holds (with the side bound: at most about
#: 50 * 4/3 * 4096^2 pixels of JPEG tiles).
EXPORT_MAX_SLIDES = 50


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_site` wrote: the folder, its slides, files and bytes."""

    out_dir: Path
    slide_keys: tuple[str, ...]
    n_files: int
    n_bytes: int


def export_level(pyramid: Pyramid, max_side_px: int) -> int:
    """The deepest deep-zoom level whose longest side is at most ``max_side_px``."""
    longest = max(pyramid.width, pyramid.height)
    halvings = max(0, math.ceil(math.log2(longest / max_side_px))) if longest > max_side_px else 0
    return pyramid.levels - 1 - halvings


def export_site(
    site: Site,
    out_dir: str | os.PathLike,
    slide_ids: Sequence[str] | None = None,
    max_side_px: int = EXPORT_MAX_SIDE_PX,
) -> ExportResult:
    """Write the viewer for ``slide_ids`` (None = every slide) into ``out_dir``.

    Raises
    ------
    SettingError
        for an unknown slide id, too many slides or a ``max_side_px`` under 256.
    InputError
        for an ``out_dir`` that is, holds or lies inside a slide's folder.
    """
    from feature_extraction.view.app import STATIC_DIR

    if max_side_px < 256:
        raise SettingError("export_max_side", f"must be at least 256 px, got {max_side_px}")
    keys = _chosen(site, slide_ids)
    out_dir = Path(out_dir)
    slides = [
        site.deepzoom.files[e.slide_id]
        for e in site.slides.values()
        if e.slide_id in site.deepzoom.files
    ]
    refuse_overwrite({"out_dir": out_dir}, {"slides": slides}, folders={"out_dir"})
    with output_dir(out_dir) as tmp:  # all of one export, or the previous one untouched
        shutil.copytree(STATIC_DIR, tmp / "static")
        shutil.copy(STATIC_DIR / "index.html", tmp / "index.html")
        levels: dict[str, int] = {}
        for key in keys:
            levels.update(_export_slide(site, key, tmp, max_side_px))
        (tmp / "data.js").write_text(site.data_js(keys, levels))
    files = [p for p in out_dir.rglob("*") if p.is_file()]  # manifest.json included
    return ExportResult(out_dir, tuple(keys), len(files), sum(p.stat().st_size for p in files))


def _chosen(site: Site, slide_ids: Sequence[str] | None) -> list[str]:
    by_id = {entry.slide_id: key for key, entry in site.slides.items()}
    keys = list(site.slides) if slide_ids is None else []
    if len(keys) > EXPORT_MAX_SLIDES:
        raise SettingError(
            "export_slides",
            f"is needed: the viewer shows {len(keys)} slides and an export holds at most "
            f"{EXPORT_MAX_SLIDES}; name the ones to share",
        )
    if slide_ids is None:
        return keys
    if len(slide_ids) > EXPORT_MAX_SLIDES:
        raise SettingError("export_slides", f"names more than {EXPORT_MAX_SLIDES} slides")
    unknown = [s for s in slide_ids if s not in by_id]
    if unknown:
        raise SettingError("export_slides", f"names slides the viewer does not show: {unknown}")
    return [by_id[s] for s in slide_ids]


def _export_slide(site: Site, key: str, root: Path, max_side_px: int) -> dict[str, int]:
    """One slide's files; returns {key: the deepest level written} (empty if it cannot open)."""
    (root / "slides").mkdir(exist_ok=True)
    (root / "slides" / f"{key}.js").write_text(site.slide_js(key))
    entry, payload = site.entry(key), site.payload(key)
    try:
        pyramid = site.deepzoom.pyramid(entry.slide_id)
    except SlideUnavailable:
        return {}  # data.js carries the message the page shows
    for kind in site.kinds:
        _write(root / "overlay" / key / f"{kind}.png", site.overlay(key, kind))
    for tile in payload.get("top", []):
        if tile["slide_id"] == entry.slide_id:  # the other slides' pictures come with them
            index = tile["bag_index"]
            _write(root / "region" / key / f"{index}.jpg", site.region(key, index))
    deepest = export_level(pyramid, max_side_px)
    for level in range(deepest + 1):
        cols, rows = site.deepzoom.level_tiles(entry.slide_id, level)
        folder = root / "dzi" / f"{key}_files" / str(level)
        folder.mkdir(parents=True, exist_ok=True)
        for col in range(cols):
            for row in range(rows):
                tile = site.deepzoom.tile(entry.slide_id, level, col, row)
                (folder / f"{col}_{row}.jpeg").write_bytes(tile)
    return {key: deepest}


def _write(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
