"""The report's "Phenotypes" section, from folders written by ``crcrs phenotypes``.

Each folder (one per cohort, e.g. the training cohort's atlas and the validation cohort's, which
reused its phenotypes) adds its per-phenotype table (``phenotypes.csv``) and its forest plot,
2-D map and gallery overview where present, labelled by the folder's name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mil_crcrs.errors import InputError
from mil_crcrs.stats.report.sections import ReportFigure, ReportParts

#: The columns of ``phenotypes.csv`` the report shows.
SHOWN = [
    "phenotype",
    "share",
    "n_patients",
    "mean_attention_x_n",
    "mean_contribution",
    "contribution_rank",
    "hr_per_sd",
    "hr_lower",
    "hr_upper",
    "p",
    "fdr",
    "spearman_crcrs",
]

#: The atlas's pictures the report embeds, with their captions.
PICTURES = {
    "forest.png": "hazard ratio per SD of each phenotype's patient fraction",
    "map.png": "2-D map of a tile sample, by phenotype and by contribution",
    "galleries/overview.png": "each phenotype's most typical tiles",
}


def phenotype_section(parts: ReportParts, folders: Sequence[str | os.PathLike]) -> None:
    """Add each atlas folder's phenotype table and pictures to ``parts``.

    Raises
    ------
    InputError
        a folder without ``phenotypes.csv`` (not written by ``crcrs phenotypes``), or one
        missing a column the section shows.
    """
    for folder in map(Path, folders):
        path = folder / "phenotypes.csv"
        if not path.is_file():
            raise InputError(f"{path}: no such file; give a folder written by crcrs phenotypes")
        table = pd.read_csv(path)
        missing = [c for c in SHOWN if c not in table.columns]
        if missing:
            raise InputError(
                f"{path}: no column {missing[0]!r}; was it written by crcrs phenotypes?"
            )
        label = folder.resolve().name
        parts.add("phenotypes", table[SHOWN], label)
        for name, caption in PICTURES.items():
            if (folder / name).is_file():
                png = (folder / name).read_bytes()
                parts.figures.append(ReportFigure("phenotypes", label, f"{label}: {caption}", png))
