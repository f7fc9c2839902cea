"""Figures of the report, drawn with matplotlib's object API on the Agg canvas.

matplotlib is imported inside the functions (``import mil_crcrs`` must not import it), and
pyplot is never used, so drawing does not touch a user's interactive backend. Every function
returns a :class:`matplotlib.figure.Figure`; :func:`mil_crcrs.figures.to_png` renders one to PNG
bytes. Time axes are in years. Non-finite estimates are left out of a plot and named in it,
never drawn as NaN. The nomogram is drawn in :mod:`mil_crcrs.stats.nomogram_plot`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mil_crcrs.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from mil_crcrs.stats.survival import KaplanMeier

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#7f7f7f")
GROUP_COLORS = {"low": "#1f77b4", "high": "#d62728"}


def _format_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def year_ticks(max_years: float) -> np.ndarray:
    """Tick positions in years from 0 to ``max_years``, at most 10 intervals."""
    for step in (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0):
        if max_years / step <= 10:
            break
    return np.arange(0.0, max_years + 1e-9, step)


def km_figure(km: KaplanMeier, title: str, unit_per_year: float) -> Figure:
    """Kaplan-Meier curves with 95% bands, censoring marks, log-rank p and numbers at risk.

    Parameters
    ----------
    km : from :func:`mil_crcrs.stats.survival.kaplan_meier`; its ``at_risk`` index (in the cohort's
        unit) gives the ticks of the at-risk table
    unit_per_year : the cohort's time units in a year (365.25 for days)
    """
    n_groups = len(km.fitters)
    # The legend and the log-rank p sit in a band above the curves, never on them.
    legend_in = 0.12 + 0.2 * n_groups
    height = 5.4 + legend_in
    fig = new_figure(7.0, height)
    grid = fig.add_gridspec(
        2,
        1,
        height_ratios=[4.0, 0.45 + 0.3 * n_groups],
        hspace=0.45,
        left=0.12,
        right=0.96,
        top=1.0 - (0.4 + legend_in) / height,
        bottom=0.04,
    )
    ax = fig.add_subplot(grid[0])
    table_ax = fig.add_subplot(grid[1], sharex=ax)
    table_ax.tick_params(labelbottom=False)
    _km_curves(ax, km, unit_per_year)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("Survival probability")
    fig.suptitle(title, y=1.0 - 0.12 / height, va="top")
    ax.grid(alpha=0.3)
    ax.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        borderaxespad=0.0,
        frameon=False,
        fontsize=9,
    )
    ax.text(
        1.0,
        1.02,
        f"log-rank {_format_p(km.logrank_p)}",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=10,
    )
    ticks = km.at_risk.index.to_numpy() / unit_per_year
    end = max(
        max(kmf.timeline.max() for kmf in km.fitters.values()) / unit_per_year,
        ticks.max() if ticks.size else 0.0,
    )
    ax.set_xticks(ticks)
    ax.set_xlim(-0.02 * end, end * 1.02)
    ax.set_xlabel("Years")
    _at_risk_table(table_ax, km, ticks)
    return fig


def _km_curves(ax: Axes, km: KaplanMeier, unit_per_year: float) -> None:
    """Each group's step curve (labelled with n and median), its 95% band and censoring marks."""
    summary = km.summary.set_index("group")
    for i, (label, kmf) in enumerate(km.fitters.items()):
        color = GROUP_COLORS.get(label, COLORS[i % len(COLORS)])
        sf = kmf.survival_function_
        ci = kmf.confidence_interval_survival_function_
        t = sf.index.to_numpy() / unit_per_year
        median = summary.loc[label, "median"]
        shown = "not reached" if not np.isfinite(median) else f"{median / unit_per_year:.1f} y"
        ax.step(
            t,
            sf.iloc[:, 0],
            where="post",
            color=color,
            lw=1.8,
            label=f"{label} (n={summary.loc[label, 'n']}, median {shown})",
        )
        ax.fill_between(t, ci.iloc[:, 0], ci.iloc[:, 1], step="post", color=color, alpha=0.15, lw=0)
        censored = kmf.event_table.index[
            (kmf.event_table["censored"] > 0) & (kmf.event_table.index > 0)
        ].to_numpy()
        if censored.size:
            ax.plot(
                censored / unit_per_year,
                kmf.survival_function_at_times(censored),
                "|",
                color=color,
                ms=6,
                mew=1,
            )


def _at_risk_table(table_ax: Axes, km: KaplanMeier, ticks: np.ndarray) -> None:
    """The numbers at risk under the curves, one row per group in its colour, at ``ticks``
    (years)."""
    n_groups = len(km.fitters)
    table_ax.set_ylim(-0.5, n_groups - 0.5)
    table_ax.set_yticks(range(n_groups))
    table_ax.set_yticklabels(list(km.fitters)[::-1])
    for i, label in enumerate(km.fitters):
        y = n_groups - 1 - i
        color = GROUP_COLORS.get(label, COLORS[i % len(COLORS)])
        table_ax.get_yticklabels()[y].set_color(color)
        for t, n in zip(ticks, km.at_risk[label], strict=True):
            table_ax.text(t, y, str(n), ha="center", va="center", fontsize=9, color=color)
    table_ax.set_title("Number at risk", fontsize=9, loc="left")
    table_ax.tick_params(axis="y", length=0, pad=16)
    table_ax.tick_params(axis="x", length=0, labelbottom=False)
    for side in ("top", "right", "left", "bottom"):
        table_ax.spines[side].set_visible(False)


def forest_figure(table: pd.DataFrame, title: str) -> Figure:
    """Hazard ratios with 95% CIs on a log axis.

    Parameters
    ----------
    table : one row per estimate with ``label, hr, hr_lower, hr_upper, p`` and optionally
        ``model`` (rows of several models are drawn in different colours) and ``note`` (shown
        for rows that could not be estimated)
    """
    table, shown = _forest_order(table)
    n = len(table)
    models = list(dict.fromkeys(table["model"])) if "model" in table else [None]
    legend = len(models) > 1
    bottom_in, top_in = (1.0 if legend else 0.6), 0.4  # x label (+ legend), title; inches
    axes_in = 0.32 * n + 0.2
    height = bottom_in + top_in + axes_in
    fig = new_figure(9.0, height)
    ax = fig.add_axes((0.3, bottom_in / height, 0.42, axes_in / height))
    y = np.arange(n)[::-1]
    finite = np.isfinite(table[["hr", "hr_lower", "hr_upper"]].to_numpy(float)).all(axis=1)
    finite &= (table[["hr", "hr_lower", "hr_upper"]].to_numpy(float) > 0).all(axis=1)
    for k, model in enumerate(models):
        sel = finite & ((table["model"] == model).to_numpy() if model is not None else True)
        if not sel.any():
            continue
        rows = table[sel]
        color = COLORS[k % len(COLORS)]
        ax.errorbar(
            rows["hr"],
            y[sel],
            xerr=[rows["hr"] - rows["hr_lower"], rows["hr_upper"] - rows["hr"]],
            fmt="s",
            color=color,
            ms=5,
            capsize=2,
            lw=1.2,
            label=model,
        )
    ax.axvline(1.0, color="0.4", ls="--", lw=1)
    _log_hr_axis(ax, table, finite)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_yticks(y)
    ax.set_yticklabels(shown, fontsize=9)
    ax.set_xlabel("Hazard ratio (95% CI, log scale)")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    if legend:
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.55 / axes_in),
            ncol=3,
            frameon=False,
            fontsize=9,
        )
    _estimates_beside(ax, table, finite, y)
    return fig


def _forest_order(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """The rows in drawing order and the label shown on each (blank for a repeated term)."""
    table = table.reset_index(drop=True)
    if "model" in table:
        # Estimates of one term from several models side by side, term order kept.
        first = {label: i for i, label in reversed(list(enumerate(table["label"])))}
        order = sorted(range(len(table)), key=lambda i: (first[table["label"][i]], i))
        table = table.iloc[order].reset_index(drop=True)
        shown = table["label"].where(~table["label"].duplicated(), "")
    else:
        shown = table["label"]
    return table, shown


def _log_hr_axis(ax: Axes, table: pd.DataFrame, finite: np.ndarray) -> None:
    """A log hazard-ratio axis around 1 and the finite CIs, with round ticks."""
    ax.set_xscale("log")
    lo, hi = 1.0, 1.0
    if finite.any():
        lo = min(float(table.loc[finite, "hr_lower"].min()), 1.0) / 1.3
        hi = max(float(table.loc[finite, "hr_upper"].max()), 1.0) * 1.3
    ax.set_xlim(lo, hi)
    candidates = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100])
    if (hi / lo) < 8:
        candidates = np.array([0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 10])
    ticks = candidates[(candidates >= lo) & (candidates <= hi)]
    ax.xaxis.set_minor_locator(_null_locator())
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])


def _estimates_beside(ax: Axes, table: pd.DataFrame, finite: np.ndarray, y: np.ndarray) -> None:
    """``HR (CI)  p`` to the right of each row, or its note when it was not estimated."""
    for i, row in table.iterrows():
        if finite[i]:
            text = (
                f"{row['hr']:.2f} ({row['hr_lower']:.2f}-{row['hr_upper']:.2f})  "
                f"{_format_p(row['p'])}"
            )
        else:
            text = str(row.get("note") or "not estimable")
        ax.text(1.03, y[i], text, transform=ax.get_yaxis_transform(), va="center", fontsize=9)


def _null_locator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def calibration_figure(table: pd.DataFrame, title: str) -> Figure:
    """Predicted vs Kaplan-Meier observed survival with 95% CIs, one series per horizon.

    ``table`` has ``horizon_label, predicted, observed, observed_lower, observed_upper``.
    """
    fig = new_figure(5.6, 5.4)
    ax = fig.add_axes((0.14, 0.1, 0.82, 0.82))
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="ideal")
    for k, (label, rows) in enumerate(table.groupby("horizon_label", sort=False)):
        ok = np.isfinite(rows[["predicted", "observed"]].to_numpy(float)).all(axis=1)
        rows = rows[ok]
        low = (rows["observed"] - rows["observed_lower"]).clip(lower=0).fillna(0)
        high = (rows["observed_upper"] - rows["observed"]).clip(lower=0).fillna(0)
        ax.errorbar(
            rows["predicted"],
            rows["observed"],
            yerr=[low, high],
            fmt="o-",
            color=COLORS[k % len(COLORS)],
            capsize=3,
            ms=5,
            lw=1.2,
            label=str(label),
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Predicted survival")
    ax.set_ylabel("Observed survival (Kaplan-Meier)")
    ax.set_title(title, fontsize=11)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", frameon=False, fontsize=9)
    return fig


def decision_curve_figure(table: pd.DataFrame, title: str) -> Figure:
    """Net benefit against threshold probability, one line per model plus treat all/none."""
    fig = new_figure(6.4, 4.6)
    ax = fig.add_axes((0.12, 0.12, 0.84, 0.8))
    all_nb = table.loc[table["model"] == "treat all", "net_benefit"]
    top = max(float(table["net_benefit"].max()), 0.01)
    styles = {
        "treat all": dict(color="0.45", ls=":", lw=1.5),
        "treat none": dict(color="k", ls="-", lw=1.0),
    }
    k = 0
    for model, rows in table.groupby("model", sort=False):
        style = styles.get(model)
        if style is None:
            style = dict(color=COLORS[k % len(COLORS)], lw=1.8)
            k += 1
        ax.plot(rows["threshold"], rows["net_benefit"], label=model, **style)
    ax.set_ylim(-0.1 * top if all_nb.size else -0.01, top * 1.1)
    ax.set_xlim(0, float(table["threshold"].max()))
    ax.set_xlabel("Threshold probability")
    ax.set_ylabel("Net benefit")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", frameon=False, fontsize=9)
    return fig


def auc_figure(
    curve: pd.DataFrame, at_horizons: pd.DataFrame, unit_per_year: float, title: str
) -> Figure:
    """Time-dependent (cumulative/dynamic) AUC over time per model, with the horizon values.

    Parameters
    ----------
    curve : ``model, time, auc`` (time in the cohort's unit)
    at_horizons : ``model, horizon, estimate, ci_lower, ci_upper`` rows of the AUC metric
    """
    fig = new_figure(6.4, 4.4)
    ax = fig.add_axes((0.12, 0.12, 0.84, 0.8))
    n_models = curve["model"].nunique()
    span = float(curve["time"].max() / unit_per_year) if len(curve) else 1.0
    for k, (model, rows) in enumerate(curve.groupby("model", sort=False)):
        shift = (k - (n_models - 1) / 2) * 0.012 * span  # keep error bars apart
        color = COLORS[k % len(COLORS)]
        ok = np.isfinite(rows["auc"].to_numpy(float))
        ax.plot(rows["time"][ok] / unit_per_year, rows["auc"][ok], color=color, lw=1.6, label=model)
        pts = at_horizons[
            (at_horizons["model"] == model) & np.isfinite(at_horizons["estimate"].to_numpy(float))
        ]
        low = (pts["estimate"] - pts["ci_lower"]).fillna(0).clip(lower=0)
        high = (pts["ci_upper"] - pts["estimate"]).fillna(0).clip(lower=0)
        ax.errorbar(
            pts["horizon"] / unit_per_year + shift,
            pts["estimate"],
            yerr=[low, high],
            fmt="o",
            color=color,
            capsize=3,
            ms=5,
        )
    ax.axhline(0.5, color="0.5", ls="--", lw=1)
    values = np.concatenate([curve["auc"].to_numpy(float), at_horizons["ci_lower"].to_numpy(float)])
    values = values[np.isfinite(values)]
    ax.set_ylim(min(0.3, float(values.min()) - 0.05) if values.size else 0.3, 1.0)
    ax.set_xlabel("Years")
    ax.set_ylabel("Time-dependent AUC")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", frameon=False, fontsize=9)
    return fig
