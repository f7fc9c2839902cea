"""Differential expression, CRCRS high vs low, and the ranking that GSEA reads.

What the matrix holds decides the test (:func:`expression_kind`), and the output names it:

- **counts** (every value a non-negative integer, largest above 100): PyDESeq2 (the negative
  binomial Wald test of DESeq2, ``~ group``), log2 fold change and Wald statistic from it;
- **linear** values (non-negative, not all integers, largest above 100: TPM, FPKM, or
  cBioPortal's RSEM ``data_mrna_seq_v2_rsem.txt``, which holds normalised, non-integer counts):
  ``log2(x + 1)``, then as log values;
- **log** values (anything else: negative values or a largest value of 100 or less): a two-sided
  Mann-Whitney U test per gene (scipy), the difference of the group means of the log values
  as log2 fold change, and the normal score of U as the statistic.

GSEA ranks genes by ``rank_metric``: DESeq2's Wald statistic, or for the rank test Welch's t of
the log values (continuous, where U's normal score has many ties that would order genes
arbitrarily).

Genes with the same value in every sample are dropped (nothing to test). Benjamini-Hochberg
across the genes tested (statsmodels). ``method`` forces ``deseq2`` or ``rank``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError
from mil_crcrs.omics.mutations import bh_fdr

DE_METHODS = ("auto", "deseq2", "rank")


def expression_kind(values: np.ndarray) -> str:
    """``"counts"``, ``"linear"`` or ``"log"`` for a (genes, samples) matrix."""
    values = np.asarray(values, dtype=float)
    if values.size == 0 or values.min() < 0 or values.max() <= 100:
        return "log"
    if np.all(values == np.round(values)):
        return "counts"
    return "linear"


def differential_expression(
    matrix: pd.DataFrame, high: np.ndarray, method: str = "auto", source: str = "expression"
) -> tuple[pd.DataFrame, str]:
    """Test every gene, high vs low.

    Parameters
    ----------
    matrix : (n_genes, n_patients) values, columns in the order of ``high``
    high : (n_patients,) bool, True for CRCRS high
    method : "auto" (by :func:`expression_kind`), "deseq2" or "rank"
    source : the file, for messages

    Returns
    -------
    (table, description): one row per gene (``gene, log2_fold_change, statistic, p, fdr,
    mean_high, mean_low, n_high, n_low``) sorted by p, and one line saying what was done.
    """
    if method not in DE_METHODS:
        raise InputError(f"differential-expression method must be one of {DE_METHODS}")
    high = np.asarray(high, dtype=bool)
    if high.all() or not high.any():
        raise InputError(f"{source}: every patient with expression is in one risk group")
    values = matrix.to_numpy(dtype=float)
    kind = expression_kind(values)
    varies = values.max(axis=1) > values.min(axis=1)
    matrix, values = matrix.loc[varies], values[varies]
    if method == "deseq2" or (method == "auto" and kind == "counts"):
        if kind != "counts":
            raise InputError(
                f"{source}: --de-method deseq2 needs raw counts (non-negative integers); this "
                f"matrix holds {kind} values"
            )
        table = _deseq2(matrix, high)
        what = "PyDESeq2 Wald test on raw counts"
    else:
        logged = np.log2(values + 1.0) if kind in ("counts", "linear") else values
        table = _rank_test(matrix.index, logged, high)
        how = "log2(x + 1) of " + kind + " values" if kind != "log" else "log values as given"
        what = f"Mann-Whitney U per gene on {how}"
    table["fdr"] = bh_fdr(table["p"])
    table["n"], table["n_high"], table["n_low"] = len(high), int(high.sum()), int((~high).sum())
    table["test"] = what
    table["family"] = f"expression: BH across the {len(table)} genes tested"
    dropped = int((~varies).sum())
    note = f"{what}; {len(table)} genes tested, {dropped} constant genes dropped"
    return table.sort_values("p", kind="stable", ignore_index=True), note


def _rank_test(genes: pd.Index, logged: np.ndarray, high: np.ndarray) -> pd.DataFrame:
    from scipy.stats import mannwhitneyu

    a, b = logged[:, high], logged[:, ~high]
    u, p = mannwhitneyu(a, b, axis=1)
    n1, n2 = a.shape[1], b.shape[1]
    z = (u - n1 * n2 / 2.0) / np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
    se = np.sqrt(a.var(axis=1, ddof=1) / n1 + b.var(axis=1, ddof=1) / n2)
    return pd.DataFrame(
        {
            "gene": genes.to_numpy(),
            "log2_fold_change": a.mean(axis=1) - b.mean(axis=1),
            "statistic": z,
            "rank_metric": (a.mean(axis=1) - b.mean(axis=1)) / np.where(se > 0, se, np.inf),
            "p": p,
            "mean_high": a.mean(axis=1),
            "mean_low": b.mean(axis=1),
        }
    )


def _deseq2(matrix: pd.DataFrame, high: np.ndarray) -> pd.DataFrame:
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    counts = matrix.T.astype(np.int64)
    counts.index = [f"s{i}" for i in range(len(counts))]  # any sample names will do
    counts.columns = [str(c) for c in counts.columns]
    meta = pd.DataFrame({"group": np.where(high, "high", "low")}, index=counts.index)
    inference = DefaultInference(n_cpus=1)
    dds = DeseqDataSet(
        counts=counts, metadata=meta, design="~group", inference=inference, quiet=True
    )
    dds.deseq2()
    stats = DeseqStats(dds, contrast=["group", "high", "low"], inference=inference, quiet=True)
    stats.summary()
    res = stats.results_df
    return pd.DataFrame(
        {
            "gene": matrix.index.to_numpy(),
            "log2_fold_change": res["log2FoldChange"].to_numpy(),
            "statistic": res["stat"].to_numpy(),
            "rank_metric": res["stat"].to_numpy(),
            "p": res["pvalue"].to_numpy(),
            "mean_high": matrix.loc[:, high].mean(axis=1).to_numpy(),
            "mean_low": matrix.loc[:, ~high].mean(axis=1).to_numpy(),
        }
    )


def gene_ranking(table: pd.DataFrame) -> pd.Series:
    """The pre-ranked list for GSEA: each gene's ``rank_metric`` (positive = higher in CRCRS
    high), largest first; genes without one (DESeq2's filtered ones) left out."""
    ranking = table.set_index("gene")["rank_metric"].astype(float)
    ranking = ranking[np.isfinite(ranking.to_numpy())]
    return ranking.sort_values(ascending=False, kind="stable")


def unique_genes(matrix: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per gene: of rows sharing a symbol, the one with the highest mean is kept (as
    for probe sets); returns the matrix and how many rows were dropped."""
    if matrix.index.is_unique:
        return matrix, 0
    order = matrix.mean(axis=1).to_numpy().argsort(kind="stable")[::-1]
    ranked = matrix.iloc[order]
    kept = ranked[~ranked.index.duplicated(keep="first")]
    return kept.loc[[g for g in matrix.index.unique() if g in kept.index]], len(matrix) - len(kept)
