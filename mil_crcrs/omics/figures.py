"""The figures of ``associate``: oncoprint, volcano plot, enrichment plots, box plots.

Drawn with :func:`mil_crcrs.figures.new_figure` (Agg canvas, no pyplot); matplotlib is imported
only there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mil_crcrs.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HIGH_COLOUR, LOW_COLOUR = "#c0392b", "#2471a3"


def oncoprint(matrix: pd.DataFrame, scores: pd.DataFrame, genes: list[str]) -> Figure:
    """Mutated (dark) vs not per patient for ``genes``, patients ordered by CRCRS and split into
    the low and high groups; the percentage mutated per group at the right.

    ``matrix``: (n_patients, n_genes) bool; ``scores``: ``crcrs``, ``risk_group`` per patient.
    """
    order = scores.loc[matrix.index, "crcrs"].sort_values(kind="stable").index
    grid = matrix.loc[order, genes].to_numpy(dtype=float).T  # (genes, patients)
    high = (scores.loc[order, "risk_group"] == "high").to_numpy()
    fig = new_figure(9, 0.4 * len(genes) + 1.6)
    ax = fig.add_axes([0.14, 0.18, 0.7, 0.72])
    ax.imshow(grid, aspect="auto", cmap="Greys", vmin=0, vmax=1.4, interpolation="nearest")
    n_low = int((~high).sum())
    ax.axvline(n_low - 0.5, color="black", lw=1.5)
    ax.set_yticks(range(len(genes)), genes, fontsize=8)
    ax.set_xticks([n_low / 2, n_low + high.sum() / 2], [f"low ({n_low})", f"high ({high.sum()})"])
    for i, gene in enumerate(genes):
        m = matrix.loc[order, gene].to_numpy()
        text = f"{100 * m[~high].mean():.0f}% | {100 * m[high].mean():.0f}%"
        ax.text(len(order) + 1, i, text, va="center", fontsize=7)
    ax.set_title("Mutated patients (dark), ordered by CRCRS: low | high", fontsize=9)
    return fig


def volcano(table: pd.DataFrame, fdr: float, n_labels: int = 10) -> Figure:
    """log2 fold change (high vs low) against -log10 p; genes under ``fdr`` coloured."""
    fig = new_figure(6, 5)
    ax = fig.add_subplot(1, 1, 1)
    x = table["log2_fold_change"].to_numpy(float)
    y = -np.log10(np.clip(table["p"].to_numpy(float), 1e-300, 1))
    hit = table["fdr"].to_numpy(float) < fdr
    colour = np.where(x > 0, HIGH_COLOUR, LOW_COLOUR)
    ax.scatter(x[~hit], y[~hit], s=4, c="#bbbbbb", rasterized=True)
    ax.scatter(x[hit], y[hit], s=6, c=colour[hit], rasterized=True)
    for _, row in table.head(n_labels).iterrows():
        ax.annotate(str(row["gene"]), (row["log2_fold_change"], -np.log10(max(row["p"], 1e-300))),
                    fontsize=6)  # fmt: skip
    ax.set_xlabel("log2 fold change, CRCRS high vs low")
    ax.set_ylabel("-log10 p")
    ax.set_title(f"Differential expression ({int(hit.sum())} genes at FDR < {fdr:g})", fontsize=9)
    return fig


def enrichment_plot(name: str, curve: np.ndarray, hits: np.ndarray, row: pd.Series) -> Figure:
    """The running enrichment score along the ranking, with the set's genes as ticks below."""
    fig = new_figure(6, 3.6)
    ax = fig.add_axes([0.12, 0.32, 0.84, 0.58])
    ax.plot(np.arange(len(curve)), curve, color="#27ae60", lw=1.5)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("running ES")
    ax.set_xticks([])
    floor = 1.0 / float(row["permutations"])  # gseapy reports p = 0 below one permutation
    p = f"p {row['p']:.3g}" if row["p"] > 0 else f"p < {floor:.2g}"
    fdr = f"FDR {row['fdr']:.3g}" if row["fdr"] > 0 else f"FDR < {floor:.2g}"
    ax.set_title(f"{name}: NES {row['nes']:.2f}, {p}, {fdr}", fontsize=9)
    ticks = fig.add_axes([0.12, 0.14, 0.84, 0.14], sharex=ax)
    ticks.vlines(hits, 0, 1, color="black", lw=0.5)
    ticks.set_yticks([])
    ticks.set_xlabel("gene rank (left: higher in CRCRS high)")
    return fig


def box_plot(values: pd.Series, scores: pd.DataFrame, title: str) -> Figure:
    """A numeric variable by risk group, or the CRCRS by category of a categorical one."""
    fig = new_figure(4, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    if pd.api.types.is_numeric_dtype(values):
        group = scores.loc[values.index, "risk_group"]
        data = [values[group == g].to_numpy(float) for g in ("low", "high")]
        labels, ylabel = ["low", "high"], str(values.name)
    else:
        labels = sorted(values.astype(str).unique())
        data = [scores.loc[values.index[values.astype(str) == lab], "crcrs"] for lab in labels]
        ylabel = "CRCRS"
    ax.boxplot(data, tick_labels=labels)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)
    return fig
