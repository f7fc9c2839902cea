"""The HTML page of a survival report: sections in a fixed order, tables, embedded figures.

Nothing on the page is fetched from elsewhere (figures are data URIs, the style is inline) and
every name, id or value that came from the user's files is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mil_crcrs._version import __version__
from mil_crcrs.stats.report.settings import ReportSettings

#: Extra images the report can embed, by suffix, with their MIME type.
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".gif": "image/gif",
}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.2em}
table.t th,table.t td{border:1px solid #ddd;padding:.2em .5em;text-align:right}
table.t th{background:#f3f3f3}table.t td:first-child{text-align:left}
.scroll{overflow-x:auto;max-width:100%}table.v td{overflow-wrap:anywhere;max-width:40em}
table.v th{text-align:left}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.warn{background:#fff4e5;border-left:4px solid #f0a020;
padding:.5em 1em}.note{font-size:.85em;color:#444}
"""

SECTIONS = [
    (
        "km",
        "Kaplan-Meier curves by CRCRS risk group",
        ["km_medians"],
        "Medians in the cohort's time unit (empty = not reached); log-rank test of high vs low.",
    ),
    (
        "cox",
        "Cox proportional-hazards models",
        ["cox", "proportional_hazards"],
        "Hazard ratios with 95% CIs and Wald p. The continuous CRCRS, as crcrs writes it, is "
        "standardised on the training cohort's out-of-fold scores: its hazard ratio is per "
        "training-cohort standard deviation. Categorical covariates are compared with their "
        "reference level (the most frequent one; 'low' for the risk group). Proportional hazards: "
        "Schoenfeld-residual test per term (Kaplan-Meier time transform, as R's cox.zph); p < 0.05 "
        "suggests the hazard ratio changes over time.",
    ),
    (
        "subgroups",
        "Subgroup hazard ratios (high vs low CRCRS)",
        ["subgroups"],
        "Within each level of a categorical covariate, or each half of a numeric one (split at its "
        "median); p_interaction is the likelihood-ratio test of risk group x covariate.",
    ),
    (
        "discrimination",
        "Discrimination",
        ["discrimination", "discrimination_difference"],
        "Models fitted on the training cohort: CRCRS alone (its score; a Cox model of it for the "
        "Brier score), the clinical covariates, and both. Uno's C is truncated at the largest "
        "horizon; censoring weights come from the cohort evaluated. Integrated Brier score: lower "
        "is better. 95% CIs from bootstrap resamples of patients (models fixed); differences are "
        "paired.",
    ),
    (
        "nomogram",
        "Nomogram (CRCRS + clinical covariates, training cohort)",
        ["cox_nomogram"],
        "Read each variable's points, add them up, and read the predicted survival at each horizon "
        "under the total.",
    ),
    (
        "calibration",
        "Calibration of the nomogram",
        ["calibration"],
        "Patients grouped by quantiles of predicted survival at each horizon; observed = "
        "Kaplan-Meier survival of the group with its 95% CI.",
    ),
    (
        "dca",
        "Decision-curve analysis",
        [],
        "Net benefit of treating the patients whose predicted risk of death by the horizon reaches "
        "the threshold (Vickers et al. 2008, survival version), against treating all or none.",
    ),
    (
        "phenotypes",
        "Phenotypes",
        ["phenotypes"],
        "Tile phenotypes from crcrs phenotypes: clusters of the encoder's tile features. share: "
        "of all tiles; mean_attention_x_n: the model's attention on its tiles (1 = uniform); "
        "mean_contribution: its tiles' mean additive share of the CRCRS; hr_per_sd: univariate "
        "Cox hazard ratio per standard deviation of the patients' fraction of the phenotype, "
        "with its 95% CI, Wald p and Benjamini-Hochberg FDR over the phenotypes; "
        "spearman_crcrs: Spearman's rho of the fraction with the CRCRS.",
    ),
]

#: Sections shown only when they have a table.
OPTIONAL_SECTIONS = {"phenotypes"}

HIDDEN_COLUMNS = {"cohort", "source", "se", "coef", "horizon", "logrank_statistic"}
P_COLUMNS = {"p", "p_overall", "p_interaction", "logrank_p"}


def _fmt(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return ""
    if isinstance(value, float | np.floating):
        if column in P_COLUMNS:
            return "&lt;0.001" if value < 0.001 else f"{value:.3f}"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def _table_html(frame: pd.DataFrame, hidden: set[str] = HIDDEN_COLUMNS) -> str:
    cols = [c for c in frame.columns if c not in hidden]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row[c], c)}</td>" for c in cols) + "</tr>"
        for _, row in frame.iterrows()
    )
    return f'<div class="scroll"><table class="t"><tr>{head}</tr>{body}</table></div>'


def _vertical_table_html(frame: pd.DataFrame, key: str) -> str:
    """A table turned on its side: one column per row of ``frame`` (named by ``key``), one row
    per other column, so that a few records with many fields (and long paths) fit the page."""
    esc = html.escape
    head = f"<th>{esc(key)}</th>" + "".join(f"<th>{esc(str(v))}</th>" for v in frame[key])
    body = "".join(
        f"<tr><th>{esc(str(c))}</th>"
        + "".join(f"<td>{_fmt(v, c)}</td>" for v in frame[c])
        + "</tr>"
        for c in frame.columns
        if c != key
    )
    return f'<div class="scroll"><table class="t v"><tr>{head}</tr>{body}</table></div>'


def _img(data: bytes, mime: str, caption: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:{mime};base64,{b64}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def render_html(
    settings: ReportSettings,
    tables: Mapping[str, pd.DataFrame],
    figures: Sequence[tuple[str, str, str, bytes]],
    images: Sequence[Path],
    notes: Sequence[str],
    extra_sections: Sequence[str] = (),
) -> str:
    """The report as one self-contained HTML page: figures and extra images embedded as data
    URIs, every user-given text escaped.

    Parameters
    ----------
    settings : the report's settings (title, covariates, horizons in the heading)
    tables : every table by name, each with a ``cohort`` column; ``cohorts`` is shown first
    figures : ``(section, cohort, caption, png)`` in display order; ``section`` is a key of
        :data:`SECTIONS`
    images : extra image files (of :data:`IMAGE_TYPES`), shown at the end
    notes : warnings shown at the top
    extra_sections : HTML sections built elsewhere (the omics section of
        :mod:`mil_crcrs.stats.report.associate`), shown before the extra images
    """
    esc = html.escape
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(settings.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(settings.title)}</h1>",
        f"<p class='note'>mil-crcrs {esc(__version__)}, {now}. Covariates: "
        f"{esc(', '.join(settings.covariates))}; horizons {esc(str(list(settings.horizons_years)))}"
        f" years; time unit {esc(settings.time_unit)}; {settings.n_bootstrap} bootstrap "
        f"resamples (seed {settings.seed}). The numbers are also in the CSV files and "
        "results.json beside this page.</p>",
        "<h2>Cohorts</h2>",
        _vertical_table_html(tables["cohorts"], "cohort"),
    ]
    if notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in notes)
        parts.append(f"<div class='warn'><b>Warnings</b><ul>{items}</ul></div>")
    for key, heading, names, text in SECTIONS:
        if key in OPTIONAL_SECTIONS and not any(name in tables for name in names):
            continue
        parts.append(f"<h2>{esc(heading)}</h2><p class='note'>{esc(text)}</p>")
        for section, _, caption, png in figures:
            if section == key:
                parts.append(_img(png, "image/png", caption))
        for name in names:
            if name not in tables:
                continue
            for cohort, frame in tables[name].groupby("cohort", sort=False):
                parts.append(f"<h3>{esc(name.replace('_', ' '))}: {esc(str(cohort))}</h3>")
                parts.append(_table_html(frame))
    parts.extend(extra_sections)
    if images:
        parts.append("<h2>Additional images</h2>")
        for p in images:
            parts.append(_img(p.read_bytes(), IMAGE_TYPES[p.suffix.lower()], p.name))
    parts.append("</body></html>")
    return "\n".join(parts)
