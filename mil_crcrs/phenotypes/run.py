"""The phenotype atlas of a cohort: the library side of ``crcrs phenotypes`` (without slides).

:func:`analyse_phenotypes` fits phenotypes on a per-slide tile sample (or reuses fitted ones),
assigns every tile, scores it with the model (the heatmaps' attention and contribution) and
tests each phenotype's per-patient fraction against survival. :func:`phenotype_atlas` writes it
into a folder (:mod:`mil_crcrs.phenotypes.outputs` lists the files) in one step: a killed or
failed run leaves no folder that looks complete. Reading tiles from the slides (galleries of
pixels, maps over thumbnails) is :mod:`feature_extraction.explain.phenotypes`.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from mil_crcrs.atomic import output_dir, refuse_overwrite
from mil_crcrs.data.cohort import Cohort
from mil_crcrs.data.inputs import FeaturesArg, check_same_features, open_inputs
from mil_crcrs.device import resolve_device
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.errors import SettingError
from mil_crcrs.phenotypes.assign import CohortTiles, assign_cohort, sample_features
from mil_crcrs.phenotypes.clustering import (
    PhenotypeModel,
    fit_phenotypes,
    load_phenotypes,
)
from mil_crcrs.phenotypes.settings import PhenotypeAtlas, PhenotypeSettings
from mil_crcrs.phenotypes.statistics import patient_fractions, phenotype_table
from mil_crcrs.runlog import LOGGER

NO_SLIDES_NOTE = "no slides given: galleries are listed by coordinates only (galleries.csv)"


def analyse_phenotypes(
    model: str | os.PathLike | CRCRSModel,
    features: FeaturesArg,
    clinical: str | os.PathLike | pd.DataFrame | Cohort,
    settings: PhenotypeSettings = PhenotypeSettings(),
    phenotypes: str | os.PathLike | PhenotypeModel | None = None,
) -> PhenotypeAtlas:
    """Phenotypes of a cohort's tiles and what they say about the CRCRS, in memory.

    Parameters
    ----------
    model : a model directory or a loaded ensemble; it scores on ``settings.device``
    features : the cohort's feature files
    clinical : the cohort table (patients, slides, and time and event for the Cox models)
    settings : see :class:`PhenotypeSettings`
    phenotypes : fitted phenotypes to reuse (a folder of an earlier run, or the object);
        None = fit them on this cohort

    Raises
    ------
    InputError
        features from another encoder than the model's or the phenotypes', bad tables or files.
    SettingError
        ``k`` larger than the cohort's tiles.
    """
    if not isinstance(model, CRCRSModel):
        model = CRCRSModel.load(model)
    inputs = open_inputs(
        features, clinical, settings.columns, settings.time_unit or model.time_unit,
        missing=settings.missing,
    )  # fmt: skip
    bags = inputs.bags
    model.check_features(bags.feature_dim, bags.encoder, str(features))
    reused = phenotypes is not None
    if reused:
        fitted = (
            phenotypes if isinstance(phenotypes, PhenotypeModel) else load_phenotypes(phenotypes)
        )
        fitted_on = (fitted.feature_dim, fitted.encoder)
        what = "the phenotypes were fitted on"
        check_same_features(str(features), bags.feature_dim, bags.encoder, fitted_on, what)
    else:
        fitted = _fit(bags, settings, str(features))
    model.to(resolve_device(settings.device))
    tiles = assign_cohort(model, fitted, bags, settings.map_tiles, settings.cluster.seed)
    cohort = inputs.cohort
    time, event = (cohort.time, cohort.event) if cohort.has_outcome else (None, None)
    table = phenotype_table(tiles, fitted.k, time, event, cohort.source)
    fractions = patient_fractions(tiles, fitted.k)
    fractions.insert(0, "crcrs", tiles.crcrs)
    if time is not None:
        fractions.insert(1, "time", time)
        fractions.insert(2, "event", event)
    galleries = gallery_tiles(tiles, settings.gallery_tiles, settings.per_patient)
    return PhenotypeAtlas(fitted, tiles, table, fractions, galleries, inputs, reused)


def _fit(bags: Any, settings: PhenotypeSettings, source: str) -> PhenotypeModel:
    """Phenotypes fitted on a per-slide sample of the cohort's tiles."""
    import logging

    k, total = settings.cluster.k, int(np.sum(bags.n_tiles))
    if k is not None and k > total:
        raise SettingError("k", f"is {k} but the cohort in {source} has only {total} tiles")
    sample = sample_features(
        bags, settings.sample_per_slide, settings.max_sample, settings.cluster.seed
    )
    logging.getLogger(LOGGER).info(
        "phenotypes: clustering %d sampled tiles of %d (%s)",
        sample.shape[0],
        total,
        settings.cluster.method,
    )
    return fit_phenotypes(sample, settings.cluster, bags.encoder)


def gallery_tiles(tiles: CohortTiles, n: int, per_patient: int) -> pd.DataFrame:
    """Per phenotype, its ``n`` most typical tiles (nearest its centre) and its ``n`` tiles of
    highest contribution, at most ``per_patient`` of one patient in each.

    Returns
    -------
    DataFrame: ``phenotype``, ``gallery`` ("typical" or "contribution"), ``rank`` (1 = first),
    then the tile's columns (:meth:`CohortTiles.frame`) and ``index`` (its row in ``tiles``)
    """
    frame = tiles.frame()
    frame["index"] = np.arange(len(frame))
    parts = []
    for gallery, key, ascending in (("typical", "distance", True), ("contribution", "contribution", False)):  # fmt: skip
        ranked = frame.sort_values(["phenotype", key, "index"], ascending=[True, ascending, True])
        ranked = ranked[ranked.groupby(["phenotype", "patient_id"]).cumcount() < per_patient]
        ranked = ranked.groupby("phenotype").head(n).copy()
        ranked.insert(0, "gallery", gallery)
        ranked.insert(1, "rank", ranked.groupby("phenotype").cumcount() + 1)
        parts.append(ranked)
    out = pd.concat(parts, ignore_index=True)
    return out[["phenotype", *[c for c in out.columns if c != "phenotype"]]]


def phenotype_atlas(
    model: str | os.PathLike | CRCRSModel,
    features: FeaturesArg,
    clinical: str | os.PathLike | pd.DataFrame | Cohort,
    out_dir: str | os.PathLike,
    settings: PhenotypeSettings = PhenotypeSettings(),
    phenotypes: str | os.PathLike | PhenotypeModel | None = None,
) -> PhenotypeAtlas:
    """Analyse a cohort's phenotypes (:func:`analyse_phenotypes`) and write the atlas into
    ``out_dir`` in one step, without slides (galleries by coordinates, maps on a blank canvas).

    Raises
    ------
    SettingError
        ``out_dir`` is the folder of the phenotypes being reused (setting ``out``).
    """
    from mil_crcrs.phenotypes.outputs import write_atlas

    check_out_dir(out_dir, phenotypes=phenotypes, model=model, features=features)
    atlas = analyse_phenotypes(model, features, clinical, settings, phenotypes)
    atlas.notes.append(NO_SLIDES_NOTE)
    with output_dir(out_dir) as tmp:  # all of one run, or the previous run's untouched
        write_atlas(atlas, tmp, settings, record=record(atlas, settings, features, None))
    return atlas


def check_out_dir(out_dir: str | os.PathLike, **inputs: Any) -> None:
    """Refuse an output folder that is, holds or lies inside one of the run's input folders
    (given by name: the phenotypes being reused, the model, the features); objects in memory
    are skipped (:func:`mil_crcrs.atomic.refuse_overwrite`)."""
    paths = {k: v for k, v in inputs.items() if isinstance(v, (str, os.PathLike))}
    refuse_overwrite({"out_dir": out_dir}, paths, folders={"out_dir"})


def record(
    atlas: PhenotypeAtlas, settings: PhenotypeSettings, features: Any, slides: Any
) -> dict[str, Any]:
    """What ``atlas.json`` says about how the atlas was made."""
    from mil_crcrs._version import __version__

    return {
        "package_version": __version__,
        "features": str(features),
        "slides": None if slides is None else [str(s) for s in slides],
        "encoder": atlas.phenotypes.encoder,
        "k": atlas.phenotypes.k,
        "phenotypes_reused": atlas.reused,
        "phenotypes_fit": atlas.phenotypes.info,
        "n_patients": len(atlas.tiles.patient_ids),
        "n_tiles": atlas.tiles.n_tiles,
        "settings": asdict(settings),
        "notes": atlas.notes,
        "definitions": "attention_x_n: the ensemble's attention times the patient's tile count "
        "(1 = uniform); contribution: the tile's additive share of the CRCRS, as the heatmaps "
        "show it; hr_per_sd: univariate Cox hazard ratio per standard deviation of the "
        "patients' fraction of the phenotype in this cohort; fdr: Benjamini-Hochberg over the "
        "phenotypes",
    }
