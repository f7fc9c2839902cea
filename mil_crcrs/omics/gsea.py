"""Pre-ranked gene-set enrichment (GSEA) of the high-vs-low ranking, with gseapy.

gseapy's ``prerank`` (its Rust core; Subramanian et al.'s weighted Kolmogorov-Smirnov running
sum, gene-set permutations for the null, NES and FDR as the Broad's GSEA computes them) is run
on the ranking of :func:`mil_crcrs.omics.expression.gene_ranking` (positive = higher in CRCRS
high), so a positive NES means the set is up in high-risk patients. Gene sets are cut to the
genes of the matrix first; sets outside ``min_size``-``max_size`` genes after that are skipped
and counted. A GMT file with no gene in the matrix at all is an error (wrong identifiers:
symbols vs Entrez ids, or another species).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GseaResult:
    """The table (one row per set tested: ``gene_set, size, es, nes, p, fdr, fwer, leading_edge``)
    and, per set, the running enrichment score and hit positions (for the figure)."""

    table: pd.DataFrame
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    ranking: pd.Series
    n_skipped: int


def restrict_sets(
    gene_sets: Mapping[str, Sequence[str]], genes: Sequence[str], source: str
) -> dict[str, list[str]]:
    """Each set cut to ``genes``; an error when no set shares a gene with them."""
    present = set(map(str, genes))
    cut = {name: [g for g in members if g in present] for name, members in gene_sets.items()}
    if not any(cut.values()):
        example = next(iter(gene_sets.values()))[:3]
        raise InputError(
            f"{source}: no gene of any gene set is in the expression matrix (e.g. "
            f"{', '.join(example)} vs {', '.join(list(present)[:3])}); symbols vs Entrez ids?"
        )
    return cut


def prerank(
    ranking: pd.Series,
    gene_sets: Mapping[str, Sequence[str]],
    permutations: int = 1000,
    min_size: int = 15,
    max_size: int = 500,
    seed: int = 0,
    threads: int = 1,
) -> GseaResult:
    """Run gseapy's pre-ranked GSEA.

    Parameters
    ----------
    ranking : gene -> statistic, largest first
    gene_sets : set name -> genes (already cut to the ranked genes)
    permutations : gene-set permutations for the null distribution
    min_size, max_size : sets outside this size are skipped
    seed, threads : gseapy's

    Returns
    -------
    GseaResult, its table sorted by p then |NES| (empty when no set has a usable size).
    """
    import gseapy

    sized = {k: list(v) for k, v in gene_sets.items() if min_size <= len(v) <= max_size}
    n_skipped = len(gene_sets) - len(sized)
    if not sized:
        return GseaResult(_empty(), {}, ranking, n_skipped)
    res = gseapy.prerank(
        rnk=ranking,
        gene_sets=sized,
        permutation_num=permutations,
        min_size=min_size,
        max_size=max_size,
        seed=seed,
        threads=threads,
        outdir=None,
        no_plot=True,
        verbose=False,
    )
    rows, curves = [], {}
    for name, r in res.results.items():
        rows.append(
            {
                "gene_set": name,
                "size": len(sized[name]),
                "es": float(r["es"]),
                "nes": float(r["nes"]),
                "p": float(r["pval"]),
                "fdr": float(r["fdr"]),
                "fwer": float(r["fwerp"]),
                "leading_edge": str(r["lead_genes"]),
            }
        )
        curves[name] = (np.asarray(r["RES"], float), np.asarray(r["hits"], int))
    table = pd.DataFrame(rows)
    table["permutations"] = permutations  # p = 0 means p < 1 / permutations
    table["test"] = f"pre-ranked GSEA (gseapy {gseapy.__version__}, {permutations} permutations)"
    table["family"] = f"gene sets: gseapy's FDR across the {len(table)} sets tested"
    table = table.assign(abs_nes=table["nes"].abs()).sort_values(
        ["p", "abs_nes"], ascending=[True, False], kind="stable", ignore_index=True
    )
    return GseaResult(table.drop(columns="abs_nes"), curves, ranking, n_skipped)


def _empty() -> pd.DataFrame:
    cols = ["gene_set", "size", "es", "nes", "p", "fdr", "fwer", "leading_edge", "permutations",
            "test", "family"]  # fmt: skip
    return pd.DataFrame(columns=cols)
