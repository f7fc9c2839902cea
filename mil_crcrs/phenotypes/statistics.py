"""What each phenotype says about the risk: its share, the model's attention and contribution on
it, and whether patients with more of it fare worse.

- :func:`patient_fractions`: (P, K) the fraction of each patient's tiles in each phenotype;
- :func:`phenotype_table`: per phenotype, its share of all tiles, the mean attention (times the
  patient's tile count, so 1 = uniform) and mean contribution to the CRCRS of its tiles, a
  univariate Cox model of the patients' fraction of it (lifelines, through
  :func:`mil_crcrs.stats.cox.fit_cox`; the hazard ratio is per standard deviation of the fraction
  over the cohort analysed), the Benjamini-Hochberg FDR over the phenotypes (statsmodels), and
  Spearman's correlation of the fraction with the CRCRS (scipy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError
from mil_crcrs.phenotypes.assign import CohortTiles

#: The columns of the per-phenotype table (``phenotypes.csv``).
PHENOTYPE_COLUMNS = [
    "phenotype",
    "n_tiles",
    "share",
    "n_patients",
    "mean_fraction",
    "mean_attention_x_n",
    "mean_contribution",
    "contribution_rank",
    "fraction_sd",
    "hr_per_sd",
    "hr_lower",
    "hr_upper",
    "p",
    "fdr",
    "cox_events",
    "spearman_crcrs",
    "spearman_p",
    "note",
]


def patient_fractions(tiles: CohortTiles, k: int) -> pd.DataFrame:
    """(P, K) fraction of each patient's tiles in each phenotype, rows by patient id, columns
    ``P1``..``PK``; rows sum to 1."""
    counts = np.zeros((len(tiles.patient_ids), k), dtype=np.float64)
    np.add.at(counts, (tiles.patient, tiles.phenotype.astype(np.int64) - 1), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    return pd.DataFrame(
        fractions, index=pd.Index(tiles.patient_ids, name="patient_id"), columns=labels(k)
    )


def labels(k: int) -> list[str]:
    """Phenotype column names ``P1``..``PK``."""
    return [f"P{i}" for i in range(1, k + 1)]


def phenotype_table(
    tiles: CohortTiles,
    k: int,
    time: np.ndarray | None = None,
    event: np.ndarray | None = None,
    source: str = "<cohort>",
) -> pd.DataFrame:
    """One row per phenotype (:data:`PHENOTYPE_COLUMNS`).

    Parameters
    ----------
    tiles : the cohort's tiles with their phenotypes and scores
    k : number of phenotypes
    time, event : (P,) each patient's follow-up and event (1 = observed), in patient order;
        None = no survival columns
    source : names the cohort in messages

    Returns
    -------
    DataFrame
    """
    fractions = patient_fractions(tiles, k)
    pheno = tiles.phenotype.astype(np.int64) - 1
    n_tiles = np.bincount(pheno, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_att = np.bincount(pheno, tiles.attention_x_n, minlength=k) / n_tiles
        mean_con = np.bincount(pheno, tiles.contribution, minlength=k) / n_tiles
    table = pd.DataFrame(
        {
            "phenotype": np.arange(1, k + 1),
            "n_tiles": n_tiles,
            "share": n_tiles / max(tiles.n_tiles, 1),
            "n_patients": (fractions.to_numpy() > 0).sum(axis=0),
            "mean_fraction": fractions.mean(axis=0).to_numpy(),
            "mean_attention_x_n": mean_att,
            "mean_contribution": mean_con,
        }
    )
    order = np.argsort(-np.nan_to_num(mean_con, nan=-np.inf), kind="stable")
    table["contribution_rank"] = np.empty(k, dtype=np.int64)
    table.loc[order, "contribution_rank"] = np.arange(1, k + 1)
    survival = fraction_cox(fractions, time, event, source)
    spearman = _spearman(fractions, tiles.crcrs)
    return pd.concat([table, survival, spearman], axis=1)[PHENOTYPE_COLUMNS]


def fraction_cox(
    fractions: pd.DataFrame,
    time: np.ndarray | None,
    event: np.ndarray | None,
    source: str = "<cohort>",
) -> pd.DataFrame:
    """Univariate Cox model of each phenotype's standardised fraction, with BH FDR.

    Returns
    -------
    DataFrame, one row per column of ``fractions``: ``fraction_sd``, ``hr_per_sd``,
    ``hr_lower``, ``hr_upper`` (95% CI), ``p`` (Wald), ``fdr``, ``cox_events``, ``note`` (why a
    phenotype has no estimate)
    """
    from statsmodels.stats.multitest import multipletests

    from mil_crcrs.stats.covariates import Encoding, Variable
    from mil_crcrs.stats.cox import fit_cox

    k = fractions.shape[1]
    out = pd.DataFrame(
        {c: np.full(k, np.nan) for c in PHENOTYPE_COLUMNS[8:15]}, index=range(k)
    ).assign(note="")
    out["fraction_sd"] = fractions.std(axis=0, ddof=1).to_numpy()
    if time is None or event is None:
        out["note"] = "no follow-up in the cohort table"
        return out
    for j, name in enumerate(fractions.columns):
        sd = out.loc[j, "fraction_sd"]
        if not sd > 0:
            out.loc[j, "note"] = "the same fraction in every patient"
            continue
        table = pd.DataFrame(
            {name: (fractions[name].to_numpy() - fractions[name].mean()) / sd, "time": time}
        ).assign(event=np.asarray(event, dtype=np.float64))
        try:
            row = fit_cox(table, Encoding((Variable(name),)), "univariable", source).table()
        except InputError as exc:
            out.loc[j, "note"] = str(exc).split(": ", 1)[-1]
            continue
        out.loc[j, ["hr_per_sd", "hr_lower", "hr_upper", "p", "cox_events"]] = row.loc[
            0, ["hr", "hr_lower", "hr_upper", "p", "events"]
        ].to_numpy(dtype=np.float64)
    tested = out["p"].notna().to_numpy()
    if tested.any():
        out.loc[tested, "fdr"] = multipletests(out.loc[tested, "p"], method="fdr_bh")[1]
    return out


def _spearman(fractions: pd.DataFrame, crcrs: np.ndarray) -> pd.DataFrame:
    """Spearman's rho (and p) of each phenotype's fraction with the CRCRS."""
    from scipy.stats import spearmanr

    rho, p = [], []
    for name in fractions.columns:
        values = fractions[name].to_numpy()
        if np.ptp(values) == 0 or np.ptp(crcrs) == 0:
            rho.append(np.nan)
            p.append(np.nan)
            continue
        result = spearmanr(values, crcrs)
        rho.append(float(result.statistic))
        p.append(float(result.pvalue))
    return pd.DataFrame({"spearman_crcrs": rho, "spearman_p": p})
