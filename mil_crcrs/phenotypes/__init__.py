"""Tile phenotypes: what the tissue behind the CRCRS looks like, grouped and tested.

- :mod:`.clustering`: phenotypes fitted on a tile sample (k-means or Leiden), saved and reused;
- :mod:`.assign`: the cohort's tiles, sampled and then all assigned and scored, streamed;
- :mod:`.statistics`: per-phenotype share, attention, contribution, Cox and Spearman;
- :mod:`.figures`: the 2-D map, forest plot and slide maps;
- :mod:`.settings`: what an atlas is made with, and what it holds;
- :mod:`.outputs`: the atlas folder;
- :mod:`.run`: :func:`phenotype_atlas`, the whole run without slides.
"""

from mil_crcrs.phenotypes.clustering import (
    ClusterSettings,
    PhenotypeModel,
    fit_phenotypes,
    load_phenotypes,
)
from mil_crcrs.phenotypes.run import analyse_phenotypes, phenotype_atlas
from mil_crcrs.phenotypes.settings import PhenotypeAtlas, PhenotypeSettings

__all__ = [
    "ClusterSettings",
    "PhenotypeAtlas",
    "PhenotypeModel",
    "PhenotypeSettings",
    "analyse_phenotypes",
    "fit_phenotypes",
    "load_phenotypes",
    "phenotype_atlas",
]
