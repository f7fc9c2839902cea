"""Mutations against the CRCRS: which genes are mutated more often in high-risk patients.

A patient counts as mutated in a gene when one of its tumour samples has a mutation of a counted
class (:data:`NON_SILENT`, maftools' non-synonymous classes; ``variant_classes`` changes them).
The patients tested are those with any row in the MAF (any class): a MAF lists only samples that
were sequenced. Per gene mutated in at least ``min_mutated`` patients:

- **Fisher's exact test** (scipy) of mutated vs not, CRCRS high vs low (the model's own
  cutoff, the ``risk_group`` of the scores); the odds ratio of mutation in high vs low and its
  95% CI from statsmodels' ``Table2x2`` (0.5 added to each cell when one is 0);
- **a rank test of the continuous CRCRS** (Mann-Whitney U, two-sided, scipy's asymptotic
  method, all genes at once: :func:`rank_test`, tested against scipy), with the AUC
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
    patients = pd.Index(sorted(set(patient.dropna())))
    genes, gene_code = np.unique(frame["Hugo_Symbol"][counted].astype(str), return_inverse=True)
    grid = np.zeros((len(patients), len(genes)), dtype=bool)
    grid[patients.get_indexer(patient[counted]), gene_code] = True
    return pd.DataFrame(grid, index=patients, columns=genes), mapping.describe()


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
    high = (scores.loc[matrix.index, "risk_group"] == "high").to_numpy()
    crcrs = scores.loc[matrix.index, "crcrs"].to_numpy(dtype=float)
    counts = matrix.sum(axis=0)
    keep = counts.index[(counts >= min_mutated).to_numpy()]
    mutated = matrix[keep].to_numpy(dtype=bool)  # (n_patients, n_genes)
    a = mutated[high].sum(axis=0)  # mutated and high, per gene
    c = mutated[~high].sum(axis=0)
    n_high, n_low = int(high.sum()), int((~high).sum())
    fisher = _fisher_by_counts(a, c, n_high, n_low)
    auc, p_rank = rank_test(crcrs, mutated)
    table = pd.DataFrame(
        {
            "gene": keep,
            "n": len(matrix),
            "n_mutated": a + c,
            "mutated_high": a,
            "mutated_low": c,
            "n_high": n_high,
            "n_low": n_low,
            "pct_mutated_high": 100.0 * a / max(n_high, 1),
            "pct_mutated_low": 100.0 * c / max(n_low, 1),
            **{
                k: fisher[:, i]
                for i, k in enumerate(("odds_ratio", "or_ci_low", "or_ci_high", "p_fisher"))
            },
            "auc_crcrs_mutated": auc,
            "p_rank": p_rank,
        }
    )
    return _finish(table), int(len(counts) - len(keep))


def _fisher_by_counts(a: np.ndarray, c: np.ndarray, n_high: int, n_low: int) -> np.ndarray:
    """(n_genes, 4): odds ratio, its 95% CI (statsmodels ``Table2x2``, 0.5 added to every cell
    when one is 0) and Fisher's p (scipy), computed once per distinct table."""
    from scipy.stats import fisher_exact
    from statsmodels.stats.contingency_tables import Table2x2

    done: dict[tuple[int, int], tuple[float, float, float, float]] = {}
    out = np.empty((len(a), 4))
    for k, key in enumerate(zip(a.tolist(), c.tolist(), strict=True)):
        if key not in done:
            t = np.array([[key[0], n_high - key[0]], [key[1], n_low - key[1]]])
            t22 = Table2x2(t, shift_zeros=True)
            low, up = t22.oddsratio_confint()
            done[key] = (float(t22.oddsratio), float(low), float(up), float(fisher_exact(t)[1]))
        out[k] = done[key]
    return out


def rank_test(score: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann-Whitney U of ``score`` in each column's True vs False patients, all
    columns at once: scipy's asymptotic method (normal approximation with tie and continuity
    corrections, as ``mannwhitneyu(method="asymptotic")``).

    Parameters
    ----------
    score : (n_patients,) float
    groups : (n_patients, n_genes) bool

    Returns
    -------
    (auc, p): (n_genes,) each; auc = U / (n1 n2), the probability that a True patient scores
    higher than a False one (ties count one half); NaN where a group is empty.
    """
    from scipy.stats import norm, rankdata

    n = len(score)
    ranks = rankdata(score)
    n1 = groups.sum(axis=0).astype(float)
    n2 = n - n1
    u1 = ranks @ groups - n1 * (n1 + 1) / 2.0
    _, tie_counts = np.unique(score, return_counts=True)
    ties = float((tie_counts**3 - tie_counts).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.sqrt(n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1))))
        u = np.maximum(u1, n1 * n2 - u1)
        z = (u - n1 * n2 / 2.0 - 0.5) / sigma
        p = np.clip(2.0 * norm.sf(z), 0.0, 1.0)
        auc = u1 / (n1 * n2)
    empty = (n1 == 0) | (n2 == 0)
    return np.where(empty, np.nan, auc), np.where(empty, np.nan, p)


_COLUMNS = [
    "gene", "n", "n_mutated", "mutated_high", "mutated_low", "n_high", "n_low",
    "pct_mutated_high", "pct_mutated_low", "odds_ratio", "or_ci_low", "or_ci_high", "p_fisher",
    "auc_crcrs_mutated", "p_rank",
]  # fmt: skip


def _finish(table: pd.DataFrame) -> pd.DataFrame:
    table["fdr_fisher"] = bh_fdr(table["p_fisher"])
    table["fdr_rank"] = bh_fdr(table["p_rank"])
    table["test_fisher"] = "Fisher's exact test, mutated vs not x CRCRS high vs low (scipy)"
    table["test_rank"] = "Mann-Whitney U of CRCRS, mutated vs wild-type (asymptotic, as scipy)"
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
