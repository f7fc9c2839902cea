"""The phenotype atlas with the slides: galleries of tile pixels and slide maps over thumbnails.

:func:`make_phenotype_atlas` is :func:`mil_crcrs.phenotypes.run.phenotype_atlas` plus what needs
the slide files: each phenotype's gallery (``galleries/P<i>.png``: its most typical tiles and
its tiles of highest contribution, cut from the slides as extraction read them,
:func:`feature_extraction.explain.pixels.read_tiles`), ``galleries/overview.png`` (every
phenotype's typical tiles, one row each) and the slide maps drawn over the slides' thumbnails.
Every slide of the cohort must have its file; the whole folder appears in one step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from feature_extraction.explain.pixels import open_slide, read_tiles, slide_files, thumbnail
from mil_crcrs.atomic import output_dir
from mil_crcrs.data.cohort import Cohort
from mil_crcrs.data.inputs import FeaturesArg, open_inputs
from mil_crcrs.data.store import FeatureStore
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.errors import InputError
from mil_crcrs.explain.figures import tile_gallery_figure
from mil_crcrs.figures import write_png
from mil_crcrs.phenotypes.clustering import PhenotypeModel
from mil_crcrs.phenotypes.outputs import write_atlas
from mil_crcrs.phenotypes.run import NO_SLIDES_NOTE, analyse_phenotypes, check_out_dir, record
from mil_crcrs.phenotypes.settings import PhenotypeAtlas, PhenotypeSettings

GALLERY_TITLES = {"typical": "most typical", "contribution": "highest contribution"}


def make_phenotype_atlas(
    model: str | os.PathLike | CRCRSModel,
    features: FeaturesArg,
    clinical: str | os.PathLike | pd.DataFrame | Cohort,
    out_dir: str | os.PathLike,
    slides: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    settings: PhenotypeSettings = PhenotypeSettings(),
    phenotypes: str | os.PathLike | PhenotypeModel | None = None,
) -> PhenotypeAtlas:
    """The phenotype atlas of a cohort, with tile galleries and thumbnails read from the slides.

    Parameters
    ----------
    model : a model directory or a loaded ensemble
    features : the cohort's feature files
    clinical : the cohort table
    out_dir : the atlas folder (see :mod:`mil_crcrs.phenotypes.outputs`)
    slides : slide files or folders, matched to feature files by stem; None = no pixels
        (galleries by coordinates only, maps on a blank canvas)
    settings : see :class:`~mil_crcrs.phenotypes.run.PhenotypeSettings`
    phenotypes : fitted phenotypes to reuse (an earlier atlas folder); None = fit them here

    Raises
    ------
    InputError
        slides given but some of the cohort's slides have no file (named), and every error of
        :func:`~mil_crcrs.phenotypes.run.analyse_phenotypes`.
    """
    check_out_dir(out_dir, phenotypes=phenotypes, model=model, features=features)
    if not isinstance(model, CRCRSModel):
        model = CRCRSModel.load(model)
    time_unit = settings.time_unit or model.time_unit
    inputs = open_inputs(features, clinical, settings.columns, time_unit, missing=settings.missing)
    files = slide_files(slides) if slides is not None else {}
    if slides is not None:
        _check_slides(inputs.cohort, files, slides)
    atlas = analyse_phenotypes(model, inputs.store, inputs.cohort, settings, phenotypes)
    if slides is None:
        atlas.notes.append(NO_SLIDES_NOTE)

    def background(slide_id: str) -> tuple[np.ndarray, float] | None:
        if slide_id not in files:
            return None
        with open_slide(files[slide_id], inputs.store.info(slide_id)) as slide:
            return thumbnail(slide, settings.max_side_px)

    with output_dir(out_dir) as tmp:  # all of one run, or the previous run's untouched
        made = record(atlas, settings, features, None if slides is None else sorted(files.values()))
        write_atlas(atlas, tmp, settings, made, background if files else None)
        if files:
            write_galleries(atlas, inputs.store, files, tmp / "galleries")
    return atlas


def _check_slides(
    cohort: Cohort, files: Mapping[str, Path], slides: str | os.PathLike | Sequence
) -> None:
    """One line naming the cohort's slides that have no file among ``slides``."""
    needed = [s for p in cohort.patient_ids for s in cohort.slides[p]]
    absent = [s for s in needed if s not in files]
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        where = slides if isinstance(slides, (str, os.PathLike)) else "the slides given"
        raise InputError(
            f"{where}: no slide file for {len(absent)} of the cohort's {len(needed)} slides "
            f"({shown}); give every slide, or leave out --slides for coordinates only"
        )


def write_galleries(
    atlas: PhenotypeAtlas, store: FeatureStore, files: Mapping[str, Path], folder: Path
) -> None:
    """``P<i>.png`` per phenotype (typical and highest-contribution tiles) and
    ``overview.png`` (every phenotype's typical tiles), tiles read from the slides."""
    pixels = _gallery_pixels(atlas.galleries, store, files)
    overview = []
    for phenotype, rows in atlas.galleries.groupby("phenotype", sort=True):
        share = float(atlas.table.loc[atlas.table["phenotype"] == phenotype, "share"].iloc[0])
        gallery_rows = []
        for gallery, title in GALLERY_TITLES.items():
            part = rows[rows["gallery"] == gallery]
            gallery_rows.append(
                (
                    f"P{phenotype} ({100 * share:.0f}% of tiles): {title}",
                    [pixels[i] for i in part["index"]],
                    [_caption(r) for _, r in part.iterrows()],
                )
            )
        overview.append(gallery_rows[0])
        write_png(folder / f"P{phenotype}.png", tile_gallery_figure(gallery_rows))
    write_png(folder / "overview.png", tile_gallery_figure(overview, tile_inches=1.2))


def _caption(row: pd.Series) -> str:
    return (
        f"{row['slide_id']}\n({row['x']}, {row['y']})\n"
        f"att {row['attention_x_n']:.2g}x  contr {row['contribution']:+.3f}"
    )


def _gallery_pixels(
    galleries: pd.DataFrame, store: FeatureStore, files: Mapping[str, Path]
) -> dict[int, np.ndarray]:
    """Tile index -> (s, s, 3) uint8 pixels of every gallery tile, each slide opened once."""
    pixels: dict[int, np.ndarray] = {}
    unique = galleries.drop_duplicates("index")
    for slide_id, rows in unique.groupby("slide_id", sort=True):
        info = store.info(slide_id)
        with open_slide(files[slide_id], info) as slide:
            tiles = read_tiles(slide, rows[["x", "y"]].to_numpy(), info)
        pixels.update(zip(rows["index"].tolist(), tiles, strict=True))
    return pixels
