"""Copy-number alterations against the CRCRS, from cBioPortal's discrete ``data_cna.txt``.

GISTIC's discrete calls (-2 deep deletion, -1 shallow loss, 0, 1 gain, 2 amplification) per gene
and sample, as cBioPortal keeps them. As cBioPortal counts alterations, only the high-level
calls count: per gene, **amplification** (2) and **deep deletion** (-2) are each tested like a
mutation (:func:`mil_crcrs.omics.mutations.mutation_tests`: Fisher's exact test high vs low with
the odds ratio and CI, and the Mann-Whitney test of the continuous CRCRS), for genes altered so
in at least ``min_altered`` patients. Both kinds form one family (Benjamini-Hochberg across every
gene x alteration tested). The columns named ``*mutated*`` hold the altered patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError
from mil_crcrs.omics.mutations import bh_fdr, mutation_tests

CNA_LEVELS = (-2, -1, 0, 1, 2)


def cna_tests(
    levels: pd.DataFrame, scores: pd.DataFrame, min_altered: int = 5, source: str = "<cna>"
) -> tuple[pd.DataFrame, int]:
    """Test amplifications and deep deletions per gene.

    Parameters
    ----------
    levels : (n_genes, n_patients) GISTIC calls in -2..2, columns = scored patient ids
    scores : indexed by patient, ``crcrs`` and ``risk_group``
    min_altered : gene x alteration pairs seen in fewer patients are skipped
    source : the file, for messages

    Returns
    -------
    (table, n_skipped): one row per gene x alteration tested (``alteration`` says which),
    sorted by Fisher p; how many pairs were skipped as too rare.
    """
    values = levels.to_numpy(dtype=float)
    bad = ~np.isin(values, CNA_LEVELS)
    if bad.any():
        row, col = (int(a[0]) for a in np.nonzero(bad))
        raise InputError(
            f"{source}: gene '{levels.index[row]}', sample of patient '{levels.columns[col]}' "
            f"holds {values[row, col]:g}; discrete copy number is -2..2 (GISTIC thresholded)"
        )
    tables, n_skipped = [], 0
    for name, altered in (
        ("amplification (2)", levels.T >= 2),
        ("deep deletion (-2)", levels.T <= -2),
    ):
        table, skipped = mutation_tests(altered, scores, min_altered)
        tables.append(table.assign(alteration=name))
        n_skipped += skipped
    table = pd.concat(tables, ignore_index=True)
    table["fdr_fisher"] = bh_fdr(table["p_fisher"])
    table["fdr_rank"] = bh_fdr(table["p_rank"])
    table["test_fisher"] = "Fisher's exact test, altered vs not x CRCRS high vs low (scipy)"
    table["test_rank"] = "Mann-Whitney U of CRCRS, altered vs not (asymptotic, as scipy)"
    table["family"] = f"copy number: BH across the {len(table)} gene x alteration tests, per test"
    columns = ["gene", "alteration", *[c for c in table.columns if c not in ("gene", "alteration")]]
    return table[columns].sort_values("p_fisher", kind="stable", ignore_index=True), n_skipped
