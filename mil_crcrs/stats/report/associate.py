"""The report's omics section: the top findings of a ``crcrs associate`` folder, with its figures.

:func:`associate_section` reads what ``associate`` wrote (``associate.json``, the CSV of each
analysis, ``figures/*.png``) and returns the HTML of one section: per analysis, the test and its
multiple-testing family, how many patients it used, the top rows by p and the figures. It reads
the files only; the analyses themselves are :mod:`mil_crcrs.omics`.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import pandas as pd

from mil_crcrs.errors import InputError
from mil_crcrs.stats.report.html import _img, _table_html

#: Per analysis: its CSV name, heading, the columns shown, the FDR column, its figures' prefixes.
ANALYSES = (
    ("mutations", "Mutations: CRCRS high vs low",
     ["gene", "n_mutated", "pct_mutated_high", "pct_mutated_low", "odds_ratio", "or_ci_low",
      "or_ci_high", "p_fisher", "fdr_fisher", "auc_crcrs_mutated", "p_rank", "fdr_rank"],
     "fdr_fisher", ("oncoprint",)),
    ("cna", "Copy number (GISTIC amplifications and deep deletions): CRCRS high vs low",
     ["gene", "alteration", "n_mutated", "pct_mutated_high", "pct_mutated_low", "odds_ratio",
      "or_ci_low", "or_ci_high", "p_fisher", "fdr_fisher", "p_rank", "fdr_rank"],
     "fdr_fisher", ()),
    ("expression", "Differential expression: CRCRS high vs low",
     ["gene", "log2_fold_change", "statistic", "p", "fdr", "mean_high", "mean_low"],
     "fdr", ("volcano",)),
    ("gene_sets", "Gene-set enrichment (pre-ranked GSEA; NES > 0 = up in CRCRS high)",
     ["gene_set", "size", "nes", "p", "fdr", "fwer"], "fdr", ("enrichment",)),
    ("patient_tables", "Per-patient tables (immune cells, scores, subtypes)",
     ["table", "variable", "kind", "effect_name", "effect", "p", "p_chi2_risk_group", "fdr", "n"],
     "fdr", ("box",)),
)  # fmt: skip


def associate_section(folder: str | os.PathLike, n_top: int = 10) -> str:
    """The HTML of the omics section for the ``associate`` output ``folder``.

    Parameters
    ----------
    folder : what ``crcrs associate --out`` wrote
    n_top : rows shown per analysis (all rows are in the folder's CSVs)
    """
    folder = Path(folder)
    summary_path = folder / "associate.json"
    if not summary_path.is_file():
        raise InputError(f"{folder}: no associate.json; is this a crcrs associate output folder?")
    summary = json.loads(summary_path.read_text())
    fdr = float(summary.get("settings", {}).get("fdr", 0.05))
    esc = html.escape
    parts = [
        "<h2>What goes with a high CRCRS (crcrs associate)</h2>",
        f"<p class='note'>From {esc(str(folder))}. High vs low is the model's own training "
        f"cutoff. Rows are ordered by p; FDR is Benjamini-Hochberg within each family "
        f"(GSEA: gseapy's permutation FDR); findings at FDR &lt; {fdr:g} are counted.</p>",
    ]
    notes = "".join(f"<li>{esc(n)}</li>" for n in summary.get("notes", []))
    parts.append(f"<details><summary>Inputs and patients used</summary><ul>{notes}</ul></details>")
    for name, heading, columns, fdr_col, figures in ANALYSES:
        path = folder / f"{name}.csv"
        if not path.is_file():
            continue
        table = pd.read_csv(path)
        n_hits = int((table[fdr_col] < fdr).sum()) if fdr_col in table else 0
        n_patients = summary.get("n_patients", {}).get(name, "?")
        tests = "; ".join(sorted({str(t) for c in table if c.startswith("test") for t in table[c]}))
        family = str(table["family"].iloc[0]) if "family" in table and len(table) else ""
        parts.append(f"<h3>{esc(heading)}</h3>")
        parts.append(
            f"<p class='note'>{len(table)} tests on {esc(str(n_patients))} patients, {n_hits} at "
            f"FDR &lt; {fdr:g}. Test: {esc(tests)}. Family: {esc(family)}. All rows: "
            f"{esc(path.name)}.</p>"
        )
        parts.append(_table_html(table[[c for c in columns if c in table]].head(n_top), set()))
        for prefix in figures:
            for png in sorted((folder / "figures").glob(f"{prefix}*.png")):
                parts.append(_img(png.read_bytes(), "image/png", f"{name}: {png.name}"))
    return "\n".join(parts)
