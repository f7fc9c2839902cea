"""Heatmaps, top-tile galleries and Grad-CAM per patient: the library side of ``crcrs heatmap``.

For every patient (a clinical table groups slides into patients; without one each feature file
is a patient), :func:`make_heatmaps` writes into ``out_dir/<patient_id>/``:

- ``<slide_id>_attention.png``, ``<slide_id>_contribution.png``: the patient-level attention and
  each tile's contribution to the CRCRS painted at the tile coords, one map per slide, over the
  slide's thumbnail when the slide file is given (``slides``), else on a blank canvas
  (:mod:`mil_crcrs.explain.maps`);
- ``top_tiles.png`` (slide files needed): the ``top_k`` top and bottom tiles by attention or by
  contribution, cut from the slide at the extraction resolution recorded in the feature file;
- with Grad-CAM: ``gradcam.png`` (the top tiles and their Grad-CAM overlays) and
  ``gradcam/<slide_id>_<tile>.png`` per tile (:mod:`feature_extraction.explain.gradcam`); with
  integrated gradients also ``<slide_id>_integrated_gradients.png``.

and into ``out_dir``: ``tiles.csv`` (the selected tiles and their scores), ``heatmaps.csv`` (every
image written) and ``heatmaps.json`` (the settings). Every file is written atomically.

Tiles are read the way extraction reads them (:class:`~feature_extraction.pipeline.TileBlocks`:
the best pyramid level, resized to the tile size), so their re-embedding reproduces the stored
features.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_extraction.encoders import Encoder
from feature_extraction.explain.gradcam import (
    GradCAMSettings,
    cam_overlay,
    feature_integrated_gradients,
    gradcam_tiles,
)
from feature_extraction.slides import Slide, find_slides
from mil_crcrs._version import __version__
from mil_crcrs.atomic import write_csv, write_json
from mil_crcrs.data.bags import PatientBag
from mil_crcrs.data.cohort import Cohort, Columns
from mil_crcrs.data.inputs import open_inputs
from mil_crcrs.data.store import BagInfo, FeatureStore, read_settings_record
from mil_crcrs.device import resolve_device
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.errors import InputError
from mil_crcrs.explain.geojson import tiles_geojson, write_geojson
from mil_crcrs.explain.maps import (
    HeatmapSettings,
    TileScores,
    TileSize,
    canvas_downsample,
    check_coords_known,
    complete_tiling,
    heatmap_figure,
    select_tiles,
    slide_heatmaps,
    tile_edge_level0,
    tile_gallery_figure,
    tile_scores,
)
from mil_crcrs.figures import write_png

SETTINGS_NAME = "heatmaps.json"
TILES_NAME = "tiles.csv"
INDEX_NAME = "heatmaps.csv"


@dataclass(frozen=True)
class HeatmapResult:
    """What :func:`make_heatmaps` wrote.

    Attributes
    ----------
    out_dir : the output folder
    images : one row per image: ``patient_id``, ``slide_id``, ``kind``, ``path``, ``background``
        ("thumbnail" or "blank")
    tiles : the selected tiles (see :func:`mil_crcrs.explain.maps.select_tiles`), with
        ``reembed_error``, ``gradcam_path`` and ``integrated_gradients`` where computed
    """

    out_dir: Path
    images: pd.DataFrame
    tiles: pd.DataFrame


# --------------------------------------------------------------------------------------------
# Reading from slides


def slide_files(paths: Sequence[str | os.PathLike] | str | os.PathLike | None) -> dict[str, Path]:
    """Slide id (file stem) -> slide file, from files and folders; empty for None."""
    if paths is None:
        return {}
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return {p.stem: p for p in find_slides(paths)}


def open_slide(path: Path, info: BagInfo) -> Slide:
    """Open the slide a feature file was made from, checking that its size matches."""
    slide = Slide(path, mpp=info.slide_mpp)
    if info.level0_width and info.level0_height:
        width, height = slide.dimensions
        if (width, height) != (info.level0_width, info.level0_height):
            slide.close()
            raise InputError(
                f"{path}: slide is {width}x{height} px but "
                f"{info.path} was made from a {info.level0_width}x{info.level0_height} px slide; "
                "is it the right slide?"
            )
    return slide


def thumbnail(slide: Slide, max_side_px: int) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 thumbnail with its longest side about ``max_side_px``, and its downsample."""
    width, height = slide.dimensions
    downsample = canvas_downsample(width, height, max_side_px)
    return slide.read_level_scaled(slide.mpp * downsample)


def read_tiles(slide: Slide, coords_level0: np.ndarray, info: BagInfo) -> np.ndarray:
    """(T, s, s, 3) uint8 tiles at the extraction resolution, read as extraction reads them.

    Parameters
    ----------
    slide : the open slide
    coords_level0 : (T, 2) level-0 top-left corners
    info : the feature file's description (tile size in level-0 and target pixels)
    """
    from feature_extraction.pipeline import TileBlocks

    if not info.tile_size_level0 or not info.tile_size_px:
        raise InputError(
            f"{info.path}: the feature file records no tile size and no CLAM patches/ file "
            "beside it does; cannot cut its tiles (give --tile-size)"
        )
    reader = TileBlocks(slide.path, slide.mpp, [], info.tile_size_level0, info.tile_size_px)
    coords = np.asarray(coords_level0, dtype=np.int64).reshape(-1, 2)
    return np.stack([reader.read_block(slide, xy[None])[0] for xy in coords])


# --------------------------------------------------------------------------------------------
# The encoder that made the features


def encoder_for_features(
    info: BagInfo, weights: str | os.PathLike | None = None, name: str | None = None
) -> Encoder:
    """Build the encoder named in a feature file (or by the user), with its preprocessing.

    Where the file records the extraction settings (our format), the encoder's weights and
    preprocessing must match them: weights from a file need that file (``weights``) and its
    checksum must agree. The final word is :func:`~feature_extraction.explain.gradcam.check_reembedding`.

    Parameters
    ----------
    info : the feature file's description
    weights : the encoder's weights file, when extraction used one
    name : the encoder's registry name for files that do not record it (``--encoder``; CLAM's
        files never do); a name that contradicts the file's own is an error

    Raises
    ------
    InputError
        if neither the file nor ``name`` names an encoder, they disagree, a weights file is
        needed but not given, or the encoder built differs from the recorded one.
    """
    from feature_extraction.encoders import RANDOM, create_encoder, list_encoders

    record = read_settings_record(info.path)[1] if info.layout == "mil_crcrs" else None
    recorded = (record or {}).get("encoder") or info.encoder
    if recorded and name and recorded != name:
        raise InputError(
            f"{info.path}: features were made by encoder '{recorded}', not '{name}' (--encoder)"
        )
    name = recorded or name
    if not name:
        raise InputError(
            f"{info.path}: the feature file does not name its encoder; Grad-CAM needs it: give "
            f"--encoder NAME (one of {', '.join(list_encoders())}) and --weights if needed"
        )
    spec = (record or {}).get("encoder_spec") or {}
    label = str(spec.get("weights") or "")
    if label == RANDOM and weights is None:
        raise InputError(
            f"{info.path}: features were made by encoder '{name}' with random weights, which "
            "cannot be rebuilt; pass the weights file with --weights"
        )
    if label.startswith("file:") and weights is None:
        raise InputError(
            f"{info.path}: features were made by encoder '{name}' with weights file "
            f"'{label[5:]}'; pass it with --weights"
        )
    encoder = create_encoder(name, None if weights is None else str(weights))
    if spec:
        recorded_sha = spec.get("weights_sha256")
        if (
            recorded_sha
            and encoder.spec.weights_sha256
            and recorded_sha != encoder.spec.weights_sha256
        ):
            raise InputError(
                f"{weights}: not the weights file encoder '{name}' used for {info.path} "
                f"(SHA-256 {encoder.spec.weights_sha256[:12]}..., recorded {recorded_sha[:12]}...)"
            )
        for key in ("mean", "std", "input_size", "fixed_input_size", "dim"):
            want, got = spec.get(key), getattr(encoder.spec, key)
            if want is not None and _differs(want, got):
                raise InputError(
                    f"{info.path}: encoder '{name}' now has {key}={got!r} but the features were "
                    f"made with {key}={want!r}"
                )
    return encoder


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return not np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return a != b


# --------------------------------------------------------------------------------------------
# Per patient


def _safe(name: str) -> str:
    """A file-name-safe version of an id (never ``.``, ``..`` or hidden)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "_"
    return "_" + safe if safe.startswith(".") else safe


def _caption(row: pd.Series, n_tiles: int) -> str:
    return (
        f"{row['slide_id']}\n({row['x']}, {row['y']})\n"
        f"att {row['attention'] * n_tiles:.3g}x  contr {row['contribution']:+.3g}"
    )


def make_heatmaps(
    model: str | os.PathLike | CRCRSModel,
    features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore,
    out_dir: str | os.PathLike,
    *,
    slides: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    clinical: str | os.PathLike | pd.DataFrame | Cohort | None = None,
    columns: Columns = Columns(),
    time_unit: str | None = None,
    patients: Iterable[str] | None = None,
    settings: HeatmapSettings = HeatmapSettings(),
    gradcam: GradCAMSettings | None = None,
    weights: str | os.PathLike | None = None,
    encoder: str | None = None,
    tile_size: TileSize | None = None,
    geojson: bool = False,
    device: str = "auto",
    missing: str = "error",
) -> HeatmapResult:
    """Attention and contribution heatmaps, top-tile galleries and Grad-CAM for each patient.

    Parameters
    ----------
    model : a model directory or a loaded :class:`~mil_crcrs.model_dir.CRCRSModel`
    features : the feature files (folder(s), files or a :class:`FeatureStore`)
    out_dir : output folder
    slides : slide files or folders (matched to feature files by stem); without them maps are
        drawn on a blank canvas and no tile images are cut
    clinical : a table grouping slides into patients; None = each feature file is a patient
    columns : the table's column names
    time_unit : unit of the table's times (default: the model's)
    patients : only these patient ids
    settings : how to paint and which tiles to select
    gradcam : Grad-CAM of the top tiles through the encoder (needs ``slides``); None = none
    weights : the encoder's weights file, when extraction used one (for Grad-CAM)
    encoder : the encoder's registry name where the feature files do not record it (CLAM's);
        checked against the model's encoder, used by Grad-CAM
    tile_size : the tile edge where the feature files do not record it (and no CLAM
        ``patches/`` file sits beside them)
    geojson : also write ``<patient>/<slide_id>.geojson`` per slide, the tiles with their
        attention and contribution for QuPath (:mod:`mil_crcrs.explain.geojson`)
    device : "auto", "cpu" or "cuda"
    missing : "error" or "warn" for slides in the table without a feature file

    Returns
    -------
    HeatmapResult

    Raises
    ------
    InputError
        bad tables or files, features from another encoder than the model's, Grad-CAM without
        slide files, or an encoder that does not reproduce the stored features.
    """
    if not isinstance(model, CRCRSModel):
        model = CRCRSModel.load(model)
    out_dir = Path(out_dir)
    inputs = open_inputs(
        features,
        clinical,
        columns,
        time_unit or model.time_unit,
        missing=missing,
        patients=patients,
    )
    store, cohort, bags = inputs.store, inputs.cohort, inputs.bags
    model.check_features(bags.feature_dim, bags.encoder or encoder, str(features))
    if "integrated_gradients" in settings.maps and not (gradcam and gradcam.integrated_gradients):
        raise InputError("an integrated-gradients map needs Grad-CAM with integrated gradients")
    files = slide_files(slides)
    torch_device = resolve_device(device)
    model.to(torch_device)  # the job scores, and runs the encoder, where the user asked
    net = None
    if gradcam is not None:
        needed = [s for p in cohort.patient_ids for s in cohort.slides[p]]
        absent = [s for s in needed if s not in files]
        if absent:
            raise InputError(
                f"--gradcam needs the slide files: no slide for {', '.join(absent[:5])}"
                + (", ..." if len(absent) > 5 else "")
                + (" in --slides" if slides is not None else " (give --slides)")
            )
        net = encoder_for_features(store.info(needed[0]), weights, encoder).to(torch_device)

    image_rows: list[dict[str, Any]] = []
    tile_tables: list[pd.DataFrame] = []
    for i in range(len(bags)):
        bag = bags[i]
        tiling = _Tiling(tile_size, geojson)
        rows, table = _one_patient(
            model, bag, store, files, out_dir, settings, gradcam, net, torch_device, tiling
        )
        image_rows.extend(rows)
        tile_tables.append(table)

    images = pd.DataFrame(
        image_rows, columns=["patient_id", "slide_id", "kind", "path", "background"]
    )
    tiles = pd.concat(tile_tables, ignore_index=True) if tile_tables else pd.DataFrame()
    write_csv(out_dir / INDEX_NAME, images)
    write_csv(out_dir / TILES_NAME, tiles)
    write_json(
        out_dir / SETTINGS_NAME,
        {
            "package_version": __version__,
            "model": model.model_config,
            "encoder": model.encoder,
            "features": str(features) if not isinstance(features, FeatureStore) else "<store>",
            "slides": sorted(str(p) for p in files.values()),
            "n_patients": len(cohort),
            "heatmap_settings": asdict(settings),
            "encoder_given": encoder,
            "tile_size_given": None if tile_size is None else str(tile_size),
            "gradcam_settings": None if gradcam is None else asdict(gradcam),
            "note": "attention is the fold models' mean attention, normalised over all of a "
            "patient's tiles; contribution is each tile's additive share of the CRCRS; maps of "
            "one patient share one colour scale",
        },
    )
    return HeatmapResult(out_dir=out_dir, images=images, tiles=tiles)


@dataclass(frozen=True)
class _Tiling:
    tile_size: TileSize | None
    geojson: bool


def _one_patient(
    model: CRCRSModel,
    bag: PatientBag,
    store: FeatureStore,
    files: Mapping[str, Path],
    out_dir: Path,
    settings: HeatmapSettings,
    gradcam: GradCAMSettings | None,
    encoder: Any,
    device: Any,
    tiling: _Tiling,
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    folder = out_dir / _safe(bag.patient_id)
    scores = tile_scores(model, bag)
    maps = settings.maps
    if gradcam is not None and gradcam.integrated_gradients:
        attribution = feature_integrated_gradients(
            model, bag, gradcam.ig_baseline, gradcam.ig_steps
        )
        scores = replace(scores, extra={"integrated_gradients": attribution.per_tile})
        maps = tuple(dict.fromkeys((*maps, "integrated_gradients")))
    infos = {sid: store.info(sid) for sid in bag.slide_ids}
    for sid in bag.slide_ids:
        check_coords_known(infos[sid], bag.coords[bag.tile_slide == bag.slide_ids.index(sid)])

    selected = select_tiles(scores, settings.top_k, settings.by)
    thumbnails, tile_pixels = _read_slides(bag, files, infos, selected, settings, tiling)

    rows = []
    if tiling.geojson:
        rows.extend(_geojson(scores, infos, folder))
    for heatmap in slide_heatmaps(scores, infos, replace(settings, maps=maps), thumbnails):
        path = folder / f"{_safe(heatmap.slide_id)}_{heatmap.kind}.png"
        write_png(path, heatmap_figure(heatmap))
        rows.append(
            {
                "patient_id": bag.patient_id,
                "slide_id": heatmap.slide_id,
                "kind": heatmap.kind,
                "path": str(path),
                "background": "thumbnail" if heatmap.slide_id in thumbnails else "blank",
            }
        )

    if "integrated_gradients" in scores.extra:
        selected["integrated_gradients"] = scores.extra["integrated_gradients"][
            selected["bag_index"].to_numpy()
        ]
    if tile_pixels and len(selected):
        gallery_rows = []
        for group in ("top", "bottom"):
            part = selected[(selected["group"] == group) & selected["bag_index"].isin(tile_pixels)]
            gallery_rows.append(
                (
                    f"{group} {len(part)} by {settings.by}",
                    [tile_pixels[j] for j in part["bag_index"]],
                    [_caption(r, scores.n_tiles) for _, r in part.iterrows()],
                )
            )
        fig = tile_gallery_figure(gallery_rows)
        fig.suptitle(f"{bag.patient_id}: CRCRS {scores.crcrs:.3f}", fontsize=10)
        path = folder / "top_tiles.png"
        write_png(path, fig)
        rows.append(
            {
                "patient_id": bag.patient_id,
                "slide_id": "",
                "kind": "gallery",
                "path": str(path),
                "background": "thumbnail",
            }
        )

    if gradcam is not None and len(selected):
        rows.extend(
            _gradcam(
                model,
                bag,
                scores,
                selected,
                tile_pixels,
                encoder,
                gradcam,
                folder,
                device,
                infos,
                settings.by,
            )
        )
    return rows, selected


def _read_slides(
    bag: PatientBag,
    files: Mapping[str, Path],
    infos: dict[str, BagInfo],
    selected: pd.DataFrame,
    settings: HeatmapSettings,
    tiling: _Tiling,
) -> tuple[dict[str, tuple[np.ndarray, float]], dict[int, np.ndarray]]:
    """Thumbnails and the selected tiles' pixels, each slide opened once; completes ``infos``
    with the tile size the files lack (from the slide's levels, or ``--tile-size``)."""
    thumbnails: dict[str, tuple[np.ndarray, float]] = {}
    tile_pixels: dict[int, np.ndarray] = {}
    for sid in bag.slide_ids:
        if sid not in files:
            infos[sid] = complete_tiling(infos[sid], tiling.tile_size)
            continue
        with open_slide(files[sid], infos[sid]) as slide:
            infos[sid] = complete_tiling(
                infos[sid], tiling.tile_size, slide.mpp, slide.level_downsamples
            )
            thumbnails[sid] = thumbnail(slide, settings.max_side_px)
            mine = selected[selected["slide_id"] == sid]
            if len(mine):
                pixels = read_tiles(slide, mine[["x", "y"]].to_numpy(), infos[sid])
                tile_pixels.update(zip(mine["bag_index"], pixels, strict=True))
    return thumbnails, tile_pixels


def _geojson(
    scores: TileScores, infos: Mapping[str, BagInfo], folder: Path
) -> list[dict[str, Any]]:
    rows = []
    for sid in scores.slide_ids:
        size = tile_edge_level0(infos[sid], scores.coords[scores.slide_rows(sid)])
        path = folder / f"{_safe(sid)}.geojson"
        write_geojson(path, tiles_geojson(scores, sid, size))
        rows.append(
            {
                "patient_id": scores.patient_id,
                "slide_id": sid,
                "kind": "geojson",
                "path": str(path),
                "background": "",
            }
        )
    return rows


def _gradcam(
    model: CRCRSModel,
    bag: PatientBag,
    scores: TileScores,
    selected: pd.DataFrame,
    tile_pixels: Mapping[int, np.ndarray],
    encoder: Any,
    settings: GradCAMSettings,
    folder: Path,
    device: Any,
    infos: Mapping[str, BagInfo],
    by: str,
) -> list[dict[str, Any]]:
    top = selected[selected["group"] == "top"]
    indices = top["bag_index"].to_list()
    source = ", ".join(sorted({str(infos[s].path) for s in top["slide_id"]}))
    cams = gradcam_tiles(
        model,
        bag,
        indices,
        np.stack([tile_pixels[j] for j in indices]),
        encoder,
        settings,
        source=source,
    )
    rows, overlays, captions = [], [], []
    selected["reembed_error"] = np.nan
    selected["gradcam_path"] = ""
    for (row_index, row), cam in zip(top.iterrows(), cams, strict=True):
        image = cam_overlay(cam, settings.cmap, settings.alpha)
        path = folder / "gradcam" / f"{_safe(row['slide_id'])}_{int(row['tile'])}.png"
        write_png(path, image)
        overlays.append(image)
        captions.append(f"{row['slide_id']}\n({row['x']}, {row['y']})\nmax {cam.cam_max:.2g}")
        selected.loc[row_index, "reembed_error"] = cam.reembed_error
        selected.loc[row_index, "gradcam_path"] = str(path)
        rows.append(
            {
                "patient_id": bag.patient_id,
                "slide_id": row["slide_id"],
                "kind": "gradcam_tile",
                "path": str(path),
                "background": "tile",
            }
        )
    fig = tile_gallery_figure(
        [
            (
                f"top {len(cams)} tiles by {by}",
                [c.tile for c in cams],
                [_caption(r, scores.n_tiles) for _, r in top.iterrows()],
            ),
            ("Grad-CAM of the CRCRS", overlays, captions),
        ]
    )
    fig.suptitle(f"{bag.patient_id}: CRCRS {scores.crcrs:.3f}", fontsize=10)
    path = folder / "gradcam.png"
    write_png(path, fig)
    rows.append(
        {
            "patient_id": bag.patient_id,
            "slide_id": "",
            "kind": "gradcam",
            "path": str(path),
            "background": "tile",
        }
    )
    return rows
