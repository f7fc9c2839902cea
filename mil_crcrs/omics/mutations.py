"""Mutations against the CRCRS: which genes are mutated more often in high-risk patients.

A patient counts as mutated in a gene when one of its tumour samples has a mutation of a counted
class (:data:`NON_SILENT`, maftools' non-synonymous classes; ``variant_classes`` changes them).
The patients tested are those with any row in the MAF (any class): a MAF lists only samples that
were sequenced. Per gene mutated in at least ``min_mutated`` patients:

- **Fisher's exact test** (scipy) of mutated vs not, CRCRS high vs low (the model's own
  cutoff, the ``risk_group`` of the scores); the odds ratio of mutation in high vs low and its
  95% CI from statsmodels' ``Table2x2`` (0.5 added to each cell when one is 0);
- **a rank test of the continuous CRCRS** (Mann-Whitney U, two-sided, scipy), with the AUC
  ``P(CRCRS of a mutated patient > CRCRS of a wild-type one)`` as its effect.

Each test is one multiple-testing family across genes, Benjamini-Hochberg (statsmodels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError
from mil_crcrs.omics.barcodes import collapse_barcodes, map_samples
from mil_crcrs.omics.readers import Table

#: Variant classes counted by default: maftools' non-synonymous (``vc_nonSyn``) classes.
NON_SILENT = (
    "Frame_Shift_Del",
    "Frame_Shift_Ins",
    "Splice_Site",
    "Translation_Start_Site",
    "Nonsense_Mutation",
    "Nonstop_Mutation",
    "In_Frame_Del",
    "In_Frame_Ins",
    "Missense_Mutation",
)


def bh_fdr(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (statsmodels ``multipletests(method='fdr_bh')``); NaN p-values
    stay NaN and are not counted in the family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


def mutation_matrix(
    maf: Table,
    scored: Sequence[str],
    classes: Sequence[str] = NON_SILENT,
    sample_to_patient: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, str]:
    """Patients x genes, True where the patient has a mutation of a counted class.

    Parameters
    ----------
    maf : the MAF (:func:`~mil_crcrs.omics.readers.read_maf`)
    scored : patient ids with a CRCRS
    classes : the ``Variant_Classification`` values counted
    sample_to_patient : a cBioPortal sample table's mapping, if any

    Returns
    -------
    (matrix, note): (n_patients, n_genes) bool, rows = every scored patient with a tumour sample
    in the MAF (whatever its classes), columns = genes with a counted mutation; and one line
    saying which samples were used.
    """
    frame = maf.frame
    sample = collapse_barcodes(frame["Tumor_Sample_Barcode"])
    mapping = map_samples(sample.unique(), scored, maf.source, sample_to_patient)
    patient = sample.map(mapping.patient_of)
    unknown = sorted(set(frame["Variant_Classification"]) - set(classes))
    counted = frame["Variant_Classification"].isin(classes) & patient.notna()
    if not counted.any():
        raise InputError(
            f"{maf.source}: no mutation of the counted classes ({', '.join(classes)}) in a "
            f"scored patient; the file's classes are {', '.join(unknown[:6])}"
        )
    hits = pd.DataFrame({"patient": patient[counted], "gene": frame["Hugo_Symbol"][counted]})
    matrix = pd.crosstab(hits["patient"], hits["gene"]) > 0
    patients = sorted(set(patient.dropna()))
    return matrix.reindex(index=patients, fill_value=False).astype(bool), mapping.describe()


def mutation_tests(
    matrix: pd.DataFrame, scores: pd.DataFrame, min_mutated: int = 5
) -> tuple[pd.DataFrame, int]:
    """Fisher's test (high vs low) and the rank test (continuous CRCRS) per gene.

    Parameters
    ----------
    matrix : (n_patients, n_genes) bool, from :func:`mutation_matrix`
    scores : indexed by patient, ``crcrs`` and ``risk_group`` for at least those patients
    min_mutated : genes mutated in fewer patients are skipped

    Returns
    -------
    (table, n_skipped): one row per gene tested, sorted by Fisher p; the number of genes
    skipped for being mutated in fewer than ``min_mutated`` patients.
    """
    from scipy.stats import fisher_exact, mannwhitneyu
    from statsmodels.stats.contingency_tables import Table2x2

    high = (scores.loc[matrix.index, "risk_group"] == "high").to_numpy()
    crcrs = scores.loc[matrix.index, "crcrs"].to_numpy(dtype=float)
    counts = matrix.sum(axis=0)
    keep = counts.index[(counts >= min_mutated).to_numpy()]
    rows = []
    for gene in keep:
        mutated = matrix[gene].to_numpy()
        a, b = int((mutated & high).sum()), int((~mutated & high).sum())
        c, d = int((mutated & ~high).sum()), int((~mutated & ~high).sum())
        table = np.array([[a, b], [c, d]])
        p_fisher = fisher_exact(table)[1]
        t22 = Table2x2(table, shift_zeros=True)
        ci_low, ci_high = t22.oddsratio_confint()
        n_mut, n_wt = int(mutated.sum()), int((~mutated).sum())
        u, p_rank = mannwhitneyu(crcrs[mutated], crcrs[~mutated]) if n_wt else (np.nan, np.nan)
        rows.append(
            {
                "gene": gene,
                "n": len(mutated),
                "n_mutated": n_mut,
                "mutated_high": a,
                "mutated_low": c,
                "n_high": a + b,
                "n_low": c + d,
                "pct_mutated_high": 100.0 * a / max(a + b, 1),
                "pct_mutated_low": 100.0 * c / max(c + d, 1),
                "odds_ratio": float(t22.oddsratio),
                "or_ci_low": float(ci_low),
                "or_ci_high": float(ci_high),
                "p_fisher": float(p_fisher),
                "auc_crcrs_mutated": float(u) / (n_mut * n_wt) if n_wt else np.nan,
                "p_rank": float(p_rank),
            }
        )
    return _finish(pd.DataFrame(rows, columns=_COLUMNS)), int(len(counts) - len(keep))


_COLUMNS = [
    "gene", "n", "n_mutated", "mutated_high", "mutated_low", "n_high", "n_low",
    "pct_mutated_high", "pct_mutated_low", "odds_ratio", "or_ci_low", "or_ci_high", "p_fisher",
    "auc_crcrs_mutated", "p_rank",
]  # fmt: skip


def _finish(table: pd.DataFrame) -> pd.DataFrame:
    table["fdr_fisher"] = bh_fdr(table["p_fisher"])
    table["fdr_rank"] = bh_fdr(table["p_rank"])
    table["test_fisher"] = "Fisher's exact test, mutated vs not x CRCRS high vs low (scipy)"
    table["test_rank"] = "Mann-Whitney U of CRCRS, mutated vs wild-type (scipy)"
    table["family"] = f"mutations: BH across the {len(table)} genes tested, per test"
    order = [*_COLUMNS[:13], "fdr_fisher", *_COLUMNS[13:], "fdr_rank"]
    return table[[*order, "test_fisher", "test_rank", "family"]].sort_values(
        ["p_fisher", "p_rank"], kind="stable", ignore_index=True
    )


def matrix_from_table(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """A plain patient x gene mutation table (0/1, or True/False) as a bool matrix."""
    values = table.apply(pd.to_numeric, errors="coerce")
    bad = ~values.isin([0, 1]).to_numpy()
    if bad.any():
        row, col = (int(a[0]) for a in np.nonzero(bad))
        raise InputError(
            f"{source}, line {row + 2}, column '{table.columns[col]}': a mutation table holds "
            f"0 or 1, got {table.iat[row, col]!r}"
        )
    return values.astype(bool)
