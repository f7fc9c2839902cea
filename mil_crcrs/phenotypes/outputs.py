"""The atlas folder: what :func:`write_atlas` puts in it.

- ``phenotypes.npz``, ``phenotypes.json``: the fitted phenotypes (``--phenotypes DIR`` reuses
  them for a validation cohort);
- ``phenotypes.csv``: one row per phenotype: share, mean attention and contribution, Cox hazard
  ratio per SD of the patients' fraction with its 95% CI, p and FDR, Spearman with the CRCRS;
- ``patient_fractions.csv``: one row per patient: CRCRS, time, event, fraction of each phenotype;
- ``tiles.csv.gz``: every tile: patient, slide, row, level-0 x and y, phenotype, distance to its
  centre, attention, contribution;
- ``galleries.csv``: the tiles of each phenotype's galleries (typical, highest contribution);
  with slides also ``galleries/P<i>.png``;
- ``map.png`` (UMAP of a tile sample by phenotype and contribution), ``forest.png``;
- ``slide_maps/<slide>.png``: slides coloured by phenotype (over the thumbnail with slides);
- with ``geojson``: ``geojson/<slide>.geojson``, every tile classified by phenotype for QuPath;
- ``atlas.json``: how it was made, the notes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mil_crcrs.atomic import atomic_path, safe_name, write_csv, write_json
from mil_crcrs.explain.scores import TileScores
from mil_crcrs.explain.tiling import tile_edge_level0, tiles_extent
from mil_crcrs.figures import write_png
from mil_crcrs.phenotypes.figures import (
    embed_2d,
    forest_figure,
    map_figure,
    phenotype_colours,
    slide_map,
    slide_map_figure,
)

if TYPE_CHECKING:
    from mil_crcrs.phenotypes.settings import PhenotypeAtlas, PhenotypeSettings

#: slide id -> (thumbnail (H, W, 3) uint8, its downsample), or None for a blank canvas.
Backgrounds = Callable[[str], "tuple[np.ndarray, float] | None"]


def write_atlas(
    atlas: PhenotypeAtlas,
    out_dir: Path,
    settings: PhenotypeSettings,
    record: dict[str, Any],
    backgrounds: Backgrounds | None = None,
) -> None:
    """Write every file of the atlas (see the module docstring) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atlas.phenotypes.save(out_dir)
    write_csv(out_dir / "phenotypes.csv", atlas.table)
    write_csv(out_dir / "patient_fractions.csv", atlas.fractions, index=True)
    write_csv(out_dir / "galleries.csv", atlas.galleries)
    with atomic_path(out_dir / "tiles.csv.gz", suffix=".csv.gz") as tmp:
        atlas.tiles.frame().to_csv(
            tmp, index=False, compression={"method": "gzip", "compresslevel": 1}
        )
    k, tiles = atlas.phenotypes.k, atlas.tiles
    if tiles.map_tiles.size:
        xy, method = embed_2d(tiles.map_embedding, settings.cluster.seed)
        fig = map_figure(
            xy,
            tiles.phenotype[tiles.map_tiles],
            tiles.contribution[tiles.map_tiles],
            k,
            method,
        )
        write_png(out_dir / "map.png", fig)
    cohort_name = Path(str(atlas.inputs.cohort.source)).name
    title = f"{cohort_name}: phenotype fractions (univariate Cox, per SD)"
    write_png(out_dir / "forest.png", forest_figure(atlas.table, title))
    for slide_id in map_slides(atlas, settings.slide_maps):
        write_png(
            out_dir / "slide_maps" / f"{safe_name(slide_id)}.png",
            _slide_map(atlas, slide_id, settings.max_side_px, backgrounds),
        )
    if settings.geojson:
        write_geojsons(atlas, out_dir / "geojson")
    write_json(out_dir / "atlas.json", record)


def map_slides(atlas: PhenotypeAtlas, n: int) -> list[str]:
    """The first ``n`` slides of the patients with the highest CRCRS."""
    tiles = atlas.tiles
    chosen: list[str] = []
    for i in np.argsort(-tiles.crcrs, kind="stable"):
        slides = np.unique(tiles.slide[tiles.patient == i])
        chosen.extend(tiles.slide_ids[s] for s in slides)
        if len(chosen) >= n:
            break
    return chosen[:n]


def _slide_rows(atlas: PhenotypeAtlas, slide_id: str) -> np.ndarray:
    return np.flatnonzero(atlas.tiles.slide == atlas.tiles.slide_ids.index(slide_id))


def _slide_map(
    atlas: PhenotypeAtlas, slide_id: str, max_side_px: int, backgrounds: Backgrounds | None
) -> Any:
    """The figure of one slide coloured by phenotype."""
    from mil_crcrs.explain.paint import blank_canvas, canvas_downsample

    tiles, rows = atlas.tiles, _slide_rows(atlas, slide_id)
    info = atlas.inputs.store.info(slide_id)
    coords = tiles.coords[rows]
    edge = tile_edge_level0(info, coords)
    background = backgrounds(slide_id) if backgrounds is not None else None
    if background is None:
        width, height = info.level0_width, info.level0_height
        if not width or not height:
            width, height = tiles_extent(coords, edge)
        downsample = canvas_downsample(width, height, max_side_px)
        background = (blank_canvas(width, height, downsample), downsample)
    image = slide_map(
        tiles.phenotype[rows], coords, edge, background[0], background[1], atlas.phenotypes.k
    )
    patient = tiles.patient_ids[int(tiles.patient[rows[0]])] if rows.size else "?"
    crcrs = tiles.crcrs[int(tiles.patient[rows[0]])] if rows.size else float("nan")
    title = f"{slide_id} (patient {patient}, CRCRS {crcrs:.3f})"
    return slide_map_figure(image, title, tiles.phenotype[rows], atlas.phenotypes.k)


def write_geojsons(atlas: PhenotypeAtlas, folder: Path) -> None:
    """``<slide>.geojson`` per slide: every tile, classified by its phenotype, for QuPath
    (:func:`mil_crcrs.explain.geojson.tiles_geojson`)."""
    from mil_crcrs.explain.geojson import tiles_geojson, write_geojson

    tiles, k = atlas.tiles, atlas.phenotypes.k
    colours = {f"P{i + 1}": c.tolist() for i, c in enumerate(phenotype_colours(k))}
    for p, patient_id in enumerate(tiles.patient_ids):
        rows = np.flatnonzero(tiles.patient == p)
        slides = np.unique(tiles.slide[rows])
        scores = TileScores(
            patient_id=patient_id,
            crcrs=float(tiles.crcrs[p]),
            slide_ids=tuple(tiles.slide_ids[s] for s in slides),
            tile_slide=np.searchsorted(slides, tiles.slide[rows]).astype(np.int64),
            coords=tiles.coords[rows],
            attention=tiles.attention[rows].astype(np.float64),
            contribution=tiles.contribution[rows].astype(np.float64),
            extra={"phenotype": tiles.phenotype[rows].astype(np.float64)},
        )
        classes = [f"P{int(v)}" for v in tiles.phenotype[rows]]
        for sid in scores.slide_ids:
            edge = tile_edge_level0(
                atlas.inputs.store.info(sid), scores.coords[scores.slide_rows(sid)]
            )
            collection = tiles_geojson(scores, sid, edge, classes, colours)
            write_geojson(folder / f"{safe_name(sid)}.geojson", collection)
