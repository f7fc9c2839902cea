"""Heatmaps, top-tile galleries and Grad-CAM per patient: the library side of ``crcrs heatmap``.

For every patient (a clinical table groups slides into patients; without one each feature file
is a patient), :func:`make_heatmaps` writes into ``out_dir/<patient_id>/``
(:class:`~feature_extraction.explain.patient.PatientOutputs`):

- ``<slide_id>_attention.png``, ``<slide_id>_contribution.png``: the patient-level attention and
  each tile's contribution to the CRCRS painted at the tile coords, one map per slide, over the
  slide's thumbnail when the slide file is given (``slides``), else on a blank canvas
  (:mod:`mil_crcrs.explain.render`);
- ``top_tiles.png`` (slide files needed): the ``top_k`` top and bottom tiles by attention or by
  contribution, cut from the slide at the extraction resolution recorded in the feature file
  (:mod:`feature_extraction.explain.pixels`);
- with Grad-CAM: ``gradcam.png`` (the top tiles and their Grad-CAM overlays) and
  ``gradcam/<slide_id>_<tile>.png`` per tile (:mod:`feature_extraction.explain.gradcam`); with
  integrated gradients also ``<slide_id>_integrated_gradients.png``;
- with ``geojson``: ``<slide_id>.geojson``, the tiles for QuPath
  (:mod:`mil_crcrs.explain.geojson`).

and into ``out_dir``: ``tiles.csv`` (the selected tiles and their scores), ``heatmaps.csv`` (every
image written) and ``heatmaps.json`` (the settings). Every file is written atomically.

What to draw, for whom and how is one :class:`HeatmapJob`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from feature_extraction.encoding.tile_encoder import Encoder
from feature_extraction.explain.encoder import encoder_for_features
from feature_extraction.explain.gradcam import GradCAMSettings
from feature_extraction.explain.patient import IMAGE_COLUMNS, PatientOutputs
from feature_extraction.explain.pixels import slide_files
from feature_extraction.reading.slides import Slide
from mil_crcrs._version import __version__
from mil_crcrs.atomic import output_dir, write_csv, write_json
from mil_crcrs.contributions import CONTRIBUTION_MEANING
from mil_crcrs.data.cohort import Cohort
from mil_crcrs.data.inputs import Inputs, open_inputs
from mil_crcrs.data.store import FeatureStore, ReadSettings, typed_encoder
from mil_crcrs.data.tables import Columns
from mil_crcrs.device import resolve_device
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.explain.settings import HeatmapSettings
from mil_crcrs.explain.tiling import TileSize
from mil_crcrs.runlog import Eta, progress_log

SETTINGS_NAME = "heatmaps.json"
TILES_NAME = "tiles.csv"
INDEX_NAME = "heatmaps.csv"


@dataclass(frozen=True)
class HeatmapJob:
    """What :func:`make_heatmaps` draws, for whom and how (saved in ``heatmaps.json``).

    Parameters
    ----------
    heatmap : how to paint and which tiles to select
    gradcam : Grad-CAM of the top tiles through the encoder (needs the slide files), with
        optional integrated gradients; None = none
    patients : only these patient ids; None = all
    encoder : the encoder's registry name where the feature files do not record it (CLAM's);
        checked against the model's encoder, used by Grad-CAM
    weights : the encoder's weights file, when extraction used one (for Grad-CAM)
    tile_size : the tile edge where the feature files do not record it (and no CLAM
        ``patches/`` file sits beside them)
    slide_mpp : the slides' level-0 resolution (um/px) for coordinates stored in microns
        (STAMP) whose slide file is not given or does not record its own
    geojson : also write ``<patient>/<slide_id>.geojson`` per slide, the tiles with their
        attention and contribution for QuPath (:mod:`mil_crcrs.explain.geojson`)
    device : where the model scores and the encoder runs: "auto", "cpu", "cuda" or "cuda:N"
    columns : the clinical table's column names
    time_unit : unit of the table's times (None = the model's)
    missing : "error" or "warn" for slides in the table without a feature file
    """

    heatmap: HeatmapSettings = HeatmapSettings()
    gradcam: GradCAMSettings | None = None
    patients: tuple[str, ...] | None = None
    encoder: str | None = None
    weights: str | os.PathLike | None = None
    tile_size: TileSize | None = None
    slide_mpp: float | None = None
    geojson: bool = False
    device: str = "auto"
    columns: Columns = Columns()
    time_unit: str | None = None
    missing: str = "error"

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", typed_encoder(self.encoder))  # uni_v1 -> uni
        if self.patients is not None:
            object.__setattr__(self, "patients", tuple(self.patients))
        if "integrated_gradients" in self.heatmap.maps and not (
            self.gradcam and self.gradcam.integrated_gradients
        ):
            raise SettingError(
                "maps", "with integrated_gradients need Grad-CAM with integrated gradients"
            )


@dataclass(frozen=True)
class HeatmapResult:
    """What :func:`make_heatmaps` wrote.

    Attributes
    ----------
    out_dir : the output folder
    images : one row per image: ``patient_id``, ``slide_id``, ``kind``, ``path``, ``background``
        ("thumbnail" or "blank")
    tiles : the selected tiles (see :func:`mil_crcrs.explain.scores.select_tiles`), with
        ``reembed_error``, ``gradcam_path`` and ``integrated_gradients`` where computed
    """

    out_dir: Path
    images: pd.DataFrame
    tiles: pd.DataFrame


def make_heatmaps(
    model: str | os.PathLike | CRCRSModel,
    features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore,
    out_dir: str | os.PathLike,
    slides: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    clinical: str | os.PathLike | pd.DataFrame | Cohort | None = None,
    job: HeatmapJob = HeatmapJob(),
) -> HeatmapResult:
    """Attention and contribution heatmaps, top-tile galleries and Grad-CAM for each patient.

    Parameters
    ----------
    model : a model directory or a loaded :class:`~mil_crcrs.ensemble.CRCRSModel`; it is moved
        to ``job.device``
    features : the feature files (folder(s), files or a :class:`FeatureStore`)
    out_dir : output folder
    slides : slide files or folders (matched to feature files by stem); without them maps are
        drawn on a blank canvas and no tile images are cut
    clinical : a table grouping slides into patients; None = each feature file is a patient
    job : what to draw, for whom and how

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
    time_unit = job.time_unit or model.time_unit
    files = slide_files(slides)
    store = _feature_store(features, files, job.slide_mpp)
    inputs = open_inputs(
        store, clinical, job.columns, time_unit, missing=job.missing, patients=job.patients
    )
    bags = inputs.bags
    model.check_features(bags.feature_dim, bags.encoder or job.encoder, str(features))
    device = resolve_device(job.device)
    model.to(device)  # the job scores, and runs the encoder, where the user asked
    encoder = None
    if job.gradcam is not None:
        encoder = _gradcam_encoder(inputs, files, slides is not None, job).to(device)
    with output_dir(out_dir) as tmp:  # all of one run, or the previous run's untouched
        outputs = PatientOutputs(
            model,
            inputs.store,
            files,
            tmp,
            settings=job.heatmap,
            gradcam=job.gradcam,
            encoder=encoder,
            tile_size=job.tile_size,
            geojson=job.geojson,
        )
        image_rows: list[dict[str, Any]] = []
        tile_tables: list[pd.DataFrame] = []
        eta = Eta(len(bags))
        for i in range(len(bags)):
            rows, table = outputs.write(bags[i])
            image_rows.extend(rows)
            tile_tables.append(table)
            progress_log.info(
                "patient %s: %d file(s), %s", bags[i].patient_id, len(rows), eta.step()
            )
        images = _moved(pd.DataFrame(image_rows, columns=IMAGE_COLUMNS), "path", tmp, out_dir)
        tiles = pd.concat(tile_tables, ignore_index=True) if tile_tables else pd.DataFrame()
        tiles = _moved(tiles, "gradcam_path", tmp, out_dir)
        write_csv(tmp / INDEX_NAME, images)
        write_csv(tmp / TILES_NAME, tiles)
        write_json(tmp / SETTINGS_NAME, _record(model, features, files, len(inputs.cohort), job))
    return HeatmapResult(out_dir=out_dir, images=images, tiles=tiles)


def _moved(table: pd.DataFrame, column: str, tmp: Path, final: Path) -> pd.DataFrame:
    """``table`` with the paths in ``column`` written under ``tmp`` given under ``final``."""
    if column in table:
        prefix = str(tmp)
        table[column] = [
            str(final) + p[len(prefix) :] if isinstance(p, str) and p.startswith(prefix) else p
            for p in table[column]
        ]
    return table


def _feature_store(
    features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore,
    files: Mapping[str, Path],
    slide_mpp: float | None,
) -> FeatureStore:
    """The feature files, coordinates stored in microns (STAMP) placed with each slide file's
    own resolution, else ``slide_mpp``."""
    if isinstance(features, FeatureStore):
        return features
    settings = ReadSettings(slide_mpp=slide_mpp)
    store = FeatureStore(features, settings=settings)
    own: dict[str, float] = {}
    for sid in store.slide_ids:
        if sid not in files:
            continue
        try:
            if store.info(sid).coords_unit != "um":
                continue
            with Slide(files[sid]) as slide:
                own[sid] = float(slide.mpp)
        except InputError:  # SlideError too
            continue  # reported where the slide is used, if it is
    if not own:
        return store
    return FeatureStore(features, settings=replace(settings, per_slide_mpp=own))


def _gradcam_encoder(
    inputs: Inputs, files: Mapping[str, Path], slides_given: bool, job: HeatmapJob
) -> Encoder:
    """The encoder that made the features, once every slide Grad-CAM needs has its file."""
    cohort = inputs.cohort
    needed = [s for p in cohort.patient_ids for s in cohort.slides[p]]
    absent = [s for s in needed if s not in files]
    if absent:
        raise SettingError(
            "gradcam",
            f"needs the slide files: no slide for {', '.join(absent[:5])}"
            + (", ..." if len(absent) > 5 else "")
            + (" among the slides given" if slides_given else "; none were given"),
        )
    return encoder_for_features(inputs.store.info(needed[0]), job.weights, job.encoder)


def _record(
    model: CRCRSModel,
    features: Any,
    files: Mapping[str, Path],
    n_patients: int,
    job: HeatmapJob,
) -> dict[str, Any]:
    """What ``heatmaps.json`` says about how the images were made."""
    return {
        "package_version": __version__,
        "model": model.model_config,
        "encoder": model.encoder,
        "features": str(features) if not isinstance(features, FeatureStore) else "<store>",
        "slides": sorted(str(p) for p in files.values()),
        "n_patients": n_patients,
        "heatmap_settings": asdict(job.heatmap),
        "encoder_given": job.encoder,
        "tile_size_given": None if job.tile_size is None else str(job.tile_size),
        "slide_mpp_given": job.slide_mpp,
        "gradcam_settings": None if job.gradcam is None else asdict(job.gradcam),
        "contribution_reference": model.contribution_reference,
        "note": "attention is the fold models' mean attention, normalised over all of a "
        f"patient's tiles; {CONTRIBUTION_MEANING}; maps of one patient share one colour scale",
    }
