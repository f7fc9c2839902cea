"""Any per-patient table against the CRCRS: immune fractions, signature scores, subtypes.

Every column of every table is one test, and all of them form one multiple-testing family
(Benjamini-Hochberg, statsmodels):

- a **numeric** column (every non-blank cell a number, more than 2 distinct values): Spearman's
  rho with the continuous CRCRS (scipy);
- a **categorical** column (text, or numbers with at most 2 distinct values): Kruskal-Wallis of
  the CRCRS across its categories, and the chi-square test of categories x risk group (scipy);
  both are reported, the Kruskal-Wallis p is the one in the family.

Blank cells are left out of that column's test; ``n`` is what each test used. Columns with fewer
than ``min_patients`` patients, or one category only, are skipped with a note.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mil_crcrs.omics.mutations import bh_fdr
from mil_crcrs.omics.readers import numeric_or_text


def table_tests(
    tables: dict[str, pd.DataFrame], scores: pd.DataFrame, min_patients: int = 10
) -> tuple[pd.DataFrame, list[str]]:
    """Test every column of every table (each indexed by scored patient ids).

    Parameters
    ----------
    tables : table name -> (n_patients, n_columns) frame indexed by patient id
    scores : indexed by patient id, ``crcrs`` and ``risk_group``
    min_patients : columns with fewer non-blank patients are skipped

    Returns
    -------
    (results, notes): one row per column tested (``table, variable, kind, test, statistic,
    effect, p, fdr, n`` ...) sorted by p, and one note per column skipped.
    """
    rows, notes = [], []
    for name, frame in tables.items():
        for column in frame.columns:
            values = numeric_or_text(frame[column]).dropna()
            values = values[values.index.isin(scores.index)]
            row = _one_test(values, scores.loc[values.index])
            if len(values) < min_patients or row is None:
                notes.append(f"{name}: column '{column}' skipped ({len(values)} patients)")
                continue
            rows.append({"table": name, "variable": column, **row})
    out = pd.DataFrame(rows, columns=_COLUMNS)
    out["fdr"] = bh_fdr(out["p"])
    out["family"] = f"patient tables: BH across the {len(out)} variables tested"
    return out.sort_values("p", kind="stable", ignore_index=True), notes


_COLUMNS = [
    "table", "variable", "kind", "test", "statistic", "effect", "effect_name", "p",
    "p_chi2_risk_group", "n", "mean_or_top_high", "mean_or_top_low",
]  # fmt: skip


def _one_test(values: pd.Series, scores: pd.DataFrame) -> dict | None:
    from scipy.stats import chi2_contingency, kruskal, spearmanr

    crcrs = scores["crcrs"].to_numpy(dtype=float)
    high = (scores["risk_group"] == "high").to_numpy()
    numeric = pd.api.types.is_numeric_dtype(values) and values.nunique() > 2
    if numeric:
        rho, p = spearmanr(values.to_numpy(dtype=float), crcrs)
        v = values.to_numpy(dtype=float)
        return {
            "kind": "numeric",
            "test": "Spearman correlation with CRCRS (scipy)",
            "statistic": float(rho),
            "effect": float(rho),
            "effect_name": "rho",
            "p": float(p),
            "p_chi2_risk_group": np.nan,
            "n": len(values),
            "mean_or_top_high": float(v[high].mean()) if high.any() else np.nan,
            "mean_or_top_low": float(v[~high].mean()) if (~high).any() else np.nan,
        }
    labels = values.astype(str)
    if labels.nunique() < 2:
        return None
    groups = [crcrs[(labels == level).to_numpy()] for level in sorted(labels.unique())]
    h, p = kruskal(*groups)
    crosstab = pd.crosstab(labels.to_numpy(), high)
    p_chi2 = chi2_contingency(crosstab)[1] if crosstab.shape[1] == 2 else np.nan
    share_high = crosstab.div(crosstab.sum(axis=0), axis=1)
    return {
        "kind": "categorical",
        "test": "Kruskal-Wallis of CRCRS across categories; chi-square vs risk group (scipy)",
        "statistic": float(h),
        "effect": float(h),
        "effect_name": "H",
        "p": float(p),
        "p_chi2_risk_group": float(p_chi2),
        "n": len(values),
        "mean_or_top_high": str(share_high[True].idxmax()) if True in share_high else "",
        "mean_or_top_low": str(share_high[False].idxmax()) if False in share_high else "",
    }
