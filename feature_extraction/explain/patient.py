"""One patient's heatmap outputs: maps per slide, top-tile gallery, Grad-CAM and GeoJSON.

:class:`PatientOutputs` holds what every patient of a heatmap job shares (the model, the feature
store, the slide files, the settings, the encoder) and writes one patient's files into
``out_dir/<patient_id>/`` (see :mod:`feature_extraction.explain.heatmaps` for the list). The
arrays are drawn by :mod:`mil_crcrs.explain`; the slides are read by
:mod:`feature_extraction.explain.pixels`; Grad-CAM is :mod:`feature_extraction.explain.gradcam`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_extraction.encoding.tile_encoder import Encoder
from feature_extraction.explain.gradcam import GradCAMSettings, cam_overlay, gradcam_tiles
from feature_extraction.explain.pixels import open_slide, read_tiles, thumbnail
from mil_crcrs.atomic import safe_name
from mil_crcrs.data.bags import PatientBag
from mil_crcrs.data.store import BagInfo, FeatureStore
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.explain.figures import heatmap_figure, tile_gallery_figure
from mil_crcrs.explain.geojson import tiles_geojson, write_geojson
from mil_crcrs.explain.integrated_gradients import feature_integrated_gradients
from mil_crcrs.explain.render import slide_heatmaps
from mil_crcrs.explain.scores import TileScores, select_tiles, tile_scores
from mil_crcrs.explain.settings import HeatmapSettings
from mil_crcrs.explain.tiling import TileSize, check_coords_known, complete_tiling, tile_edge_level0
from mil_crcrs.figures import write_png

#: The columns of the image index (``heatmaps.csv``), one row per file written.
IMAGE_COLUMNS = ["patient_id", "slide_id", "kind", "path", "background"]


def _caption(row: pd.Series, n_tiles: int) -> str:
    return (
        f"{row['slide_id']}\n({row['x']}, {row['y']})\n"
        f"att {row['attention'] * n_tiles:.3g}x  contr {row['contribution']:+.3g}"
    )


def _title(scores: TileScores) -> str:
    """A gallery's title: the CRCRS and the reference its tiles' contributions are against."""
    return (
        f"{scores.patient_id}: CRCRS {scores.crcrs:.3f} = reference {scores.reference:.3f} "
        "+ \u03a3 contr (> 0 raises risk)"
    )


def _image(patient_id: str, slide_id: str, kind: str, path: Path, background: str) -> dict:
    """One row of the image index."""
    return dict(
        zip(IMAGE_COLUMNS, (patient_id, slide_id, kind, str(path), background), strict=True)
    )


@dataclass(frozen=True)
class PatientOutputs:
    """Writes each patient's heatmap files; what all patients of one job share.

    Attributes
    ----------
    model : the trained ensemble, where it scores (the caller put it there)
    store : the feature files
    files : slide id -> slide file; slides without one are painted on a blank canvas
    out_dir : the job's output folder (one sub-folder per patient)
    settings : how to paint and which tiles to select
    gradcam : Grad-CAM (and integrated gradients) settings; None = no Grad-CAM
    encoder : the encoder that made the features, for Grad-CAM
    tile_size : the tile edge the user stated for files that record none
    geojson : also write each slide's tiles as QuPath GeoJSON
    """

    model: CRCRSModel
    store: FeatureStore
    files: Mapping[str, Path]
    out_dir: Path
    settings: HeatmapSettings = HeatmapSettings()
    gradcam: GradCAMSettings | None = None
    encoder: Encoder | None = None
    tile_size: TileSize | None = None
    geojson: bool = False

    def write(self, bag: PatientBag) -> tuple[list[dict[str, Any]], pd.DataFrame]:
        """Write one patient's files.

        Returns
        -------
        rows : one image-index row per file written (:data:`IMAGE_COLUMNS`)
        selected : the patient's selected tiles (:func:`~mil_crcrs.explain.scores.select_tiles`)
            with ``integrated_gradients``, ``reembed_error`` and ``gradcam_path`` where computed
        """
        folder = self.out_dir / safe_name(bag.patient_id)
        scores, maps = self._scores(bag)
        infos = {sid: self.store.info(sid) for sid in bag.slide_ids}
        for sid in bag.slide_ids:
            check_coords_known(infos[sid], bag.coords[bag.tile_slide == bag.slide_ids.index(sid)])

        selected = select_tiles(scores, self.settings.top_k, self.settings.by)
        thumbnails, tile_pixels = self._read_slides(bag, infos, selected)

        rows = []
        if self.geojson:
            rows.extend(self._geojson(scores, infos, folder))
        settings = replace(self.settings, maps=maps)
        for heatmap in slide_heatmaps(scores, infos, settings, thumbnails):
            path = folder / f"{safe_name(heatmap.slide_id)}_{heatmap.kind}.png"
            write_png(path, heatmap_figure(heatmap))
            background = "thumbnail" if heatmap.slide_id in thumbnails else "blank"
            rows.append(_image(bag.patient_id, heatmap.slide_id, heatmap.kind, path, background))

        if "integrated_gradients" in scores.extra:
            selected["integrated_gradients"] = scores.extra["integrated_gradients"][
                selected["bag_index"].to_numpy()
            ]
        if tile_pixels and len(selected):
            rows.append(self._gallery(scores, selected, tile_pixels, folder))
        if self.gradcam is not None and len(selected):
            rows.extend(
                self._gradcam(bag, scores, selected, tile_pixels, infos, folder, self.gradcam)
            )
        return rows, selected

    def _scores(self, bag: PatientBag) -> tuple[TileScores, tuple[str, ...]]:
        """The patient's tile scores (with integrated gradients if asked) and the maps to draw."""
        scores = tile_scores(self.model, bag)
        maps = self.settings.maps
        if self.gradcam is not None and self.gradcam.integrated_gradients:
            attribution = feature_integrated_gradients(
                self.model, bag, self.gradcam.ig_baseline, self.gradcam.ig_steps
            )
            scores = replace(scores, extra={"integrated_gradients": attribution.per_tile})
            maps = tuple(dict.fromkeys((*maps, "integrated_gradients")))
        return scores, maps

    def _read_slides(
        self, bag: PatientBag, infos: dict[str, BagInfo], selected: pd.DataFrame
    ) -> tuple[dict[str, tuple[np.ndarray, float]], dict[int, np.ndarray]]:
        """Thumbnails and the selected tiles' pixels, each slide opened once; completes ``infos``
        with the tile size the files lack (from the slide's levels, or ``tile_size``)."""
        thumbnails: dict[str, tuple[np.ndarray, float]] = {}
        tile_pixels: dict[int, np.ndarray] = {}
        for sid in bag.slide_ids:
            if sid not in self.files:
                infos[sid] = complete_tiling(infos[sid], self.tile_size)
                continue
            with open_slide(self.files[sid], infos[sid]) as slide:
                infos[sid] = complete_tiling(
                    infos[sid], self.tile_size, slide.mpp, slide.level_downsamples
                )
                thumbnails[sid] = thumbnail(slide, self.settings.max_side_px)
                mine = selected[selected["slide_id"] == sid]
                if len(mine):
                    pixels = read_tiles(slide, mine[["x", "y"]].to_numpy(), infos[sid])
                    tile_pixels.update(zip(mine["bag_index"], pixels, strict=True))
        return thumbnails, tile_pixels

    def _geojson(
        self, scores: TileScores, infos: Mapping[str, BagInfo], folder: Path
    ) -> list[dict[str, Any]]:
        """``<slide_id>.geojson`` per slide: its tiles for QuPath."""
        rows = []
        for sid in scores.slide_ids:
            size = tile_edge_level0(infos[sid], scores.coords[scores.slide_rows(sid)])
            path = folder / f"{safe_name(sid)}.geojson"
            write_geojson(path, tiles_geojson(scores, sid, size))
            rows.append(_image(scores.patient_id, sid, "geojson", path, ""))
        return rows

    def _gallery(
        self,
        scores: TileScores,
        selected: pd.DataFrame,
        tile_pixels: Mapping[int, np.ndarray],
        folder: Path,
    ) -> dict[str, Any]:
        """``top_tiles.png``: the top and bottom tiles whose pixels were read."""
        gallery_rows = []
        for group in ("top", "bottom"):
            part = selected[(selected["group"] == group) & selected["bag_index"].isin(tile_pixels)]
            gallery_rows.append(
                (
                    f"{group} {len(part)} by {self.settings.by}",
                    [tile_pixels[j] for j in part["bag_index"]],
                    [_caption(r, scores.n_tiles) for _, r in part.iterrows()],
                )
            )
        fig = tile_gallery_figure(gallery_rows)
        fig.suptitle(_title(scores), fontsize=10)
        path = folder / "top_tiles.png"
        write_png(path, fig)
        return _image(scores.patient_id, "", "gallery", path, "thumbnail")

    def _gradcam(
        self,
        bag: PatientBag,
        scores: TileScores,
        selected: pd.DataFrame,
        tile_pixels: Mapping[int, np.ndarray],
        infos: Mapping[str, BagInfo],
        folder: Path,
        settings: GradCAMSettings,
    ) -> list[dict[str, Any]]:
        """Grad-CAM of the top tiles: ``gradcam/<slide_id>_<tile>.png`` each and ``gradcam.png``;
        adds ``reembed_error`` and ``gradcam_path`` to ``selected``."""
        top = selected[selected["group"] == "top"]
        indices = top["bag_index"].to_list()
        source = ", ".join(sorted({str(infos[s].path) for s in top["slide_id"]}))
        pixels = np.stack([tile_pixels[j] for j in indices])
        cams = gradcam_tiles(self.model, bag, indices, pixels, self.encoder, settings, source)
        rows, overlays, captions = [], [], []
        selected["reembed_error"] = np.nan
        selected["gradcam_path"] = ""
        for (row_index, row), cam in zip(top.iterrows(), cams, strict=True):
            image = cam_overlay(cam, settings.cmap, settings.alpha)
            path = folder / "gradcam" / f"{safe_name(row['slide_id'])}_{int(row['tile'])}.png"
            write_png(path, image)
            overlays.append(image)
            captions.append(f"{row['slide_id']}\n({row['x']}, {row['y']})\nmax {cam.cam_max:.2g}")
            selected.loc[row_index, "reembed_error"] = cam.reembed_error
            selected.loc[row_index, "gradcam_path"] = str(path)
            rows.append(_image(bag.patient_id, row["slide_id"], "gradcam_tile", path, "tile"))
        fig = tile_gallery_figure(
            [
                (
                    f"top {len(cams)} tiles by {self.settings.by}",
                    [c.tile for c in cams],
                    [_caption(r, scores.n_tiles) for _, r in top.iterrows()],
                ),
                ("Grad-CAM of the CRCRS", overlays, captions),
            ]
        )
        fig.suptitle(_title(scores), fontsize=10)
        path = folder / "gradcam.png"
        write_png(path, fig)
        rows.append(_image(bag.patient_id, "", "gradcam", path, "tile"))
        return rows
