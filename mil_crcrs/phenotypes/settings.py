"""What a phenotype atlas is made with (:class:`PhenotypeSettings`) and what it holds in memory
(:class:`PhenotypeAtlas`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from mil_crcrs.data.cohort import Columns
from mil_crcrs.data.inputs import Inputs
from mil_crcrs.errors import SettingError
from mil_crcrs.phenotypes.assign import CohortTiles
from mil_crcrs.phenotypes.clustering import ClusterSettings, PhenotypeModel


@dataclass(frozen=True)
class PhenotypeSettings:
    """What :func:`phenotype_atlas` does (saved in ``atlas.json``).

    Parameters
    ----------
    cluster : how tiles are clustered (ignored when fitted phenotypes are reused)
    sample_per_slide : tiles drawn from each slide to fit the phenotypes on
    max_sample : at most this many tiles in the fitting sample
    map_tiles : about this many tiles in the 2-D map
    gallery_tiles : tiles per phenotype in each gallery (typical, highest contribution)
    per_patient : at most this many tiles of one patient in a gallery
    slide_maps : slides drawn coloured by phenotype (those of the highest-CRCRS patients)
    geojson : also write every slide's tiles as QuPath GeoJSON, classified by phenotype
    max_side_px : longest side of a slide map
    columns, time_unit, missing : how the cohort table is read (see ``open_inputs``)
    device : where the model scores
    """

    cluster: ClusterSettings = ClusterSettings()
    sample_per_slide: int = 200
    max_sample: int = 100_000
    map_tiles: int = 5000
    gallery_tiles: int = 8
    per_patient: int = 2
    slide_maps: int = 6
    geojson: bool = False
    max_side_px: int = 800
    columns: Columns = Columns()
    time_unit: str | None = None
    missing: str = "error"
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("sample_per_slide", "max_sample", "gallery_tiles", "per_patient"):
            if getattr(self, name) < 1:
                raise SettingError(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("map_tiles", "slide_maps"):
            if getattr(self, name) < 0:
                raise SettingError(name, f"must be at least 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class PhenotypeAtlas:
    """A cohort's phenotypes, its tiles and the statistics (what the output folder holds).

    Attributes
    ----------
    phenotypes : the fitted phenotypes (fitted here, or reused)
    tiles : every tile with its phenotype and scores
    table : one row per phenotype (:data:`~mil_crcrs.phenotypes.statistics.PHENOTYPE_COLUMNS`)
    fractions : one row per patient: ``crcrs``, ``time``, ``event`` (if known), ``P1``..``PK``
    galleries : the tiles each gallery shows (see :func:`gallery_tiles`)
    inputs : the matched features and cohort
    reused : the phenotypes came from an earlier run (a validation cohort)
    notes : what the user should know, once each
    """

    phenotypes: PhenotypeModel
    tiles: CohortTiles
    table: pd.DataFrame
    fractions: pd.DataFrame
    galleries: pd.DataFrame
    inputs: Inputs
    reused: bool
    notes: list[str] = field(default_factory=list)
