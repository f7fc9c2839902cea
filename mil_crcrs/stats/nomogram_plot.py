"""The nomogram drawn: a points ruler, one axis per variable, total points, survival per horizon.

Drawn as the other report figures are (:mod:`mil_crcrs.stats.plots`): matplotlib's object API
on the Agg canvas through :func:`mil_crcrs.figures.new_figure`, imported on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mil_crcrs.figures import new_figure
from mil_crcrs.stats.plots import year_ticks

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mil_crcrs.stats.nomogram import Nomogram


def nomogram_figure(nomogram: Nomogram, horizon_labels: Sequence[str], title: str) -> Figure:
    """The nomogram: a points ruler, one axis per variable, total points, survival per horizon."""
    scales = nomogram.scales
    n_rows = 1 + len(scales) + 1 + len(nomogram.horizons)
    fig = new_figure(9.0, 0.9 + 0.55 * n_rows)
    ax = fig.add_axes((0.22, 0.04, 0.74, 0.88))
    ax.set_xlim(-3, 103)
    ax.set_ylim(-0.7, n_rows - 0.3)
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    total_max = nomogram.max_total_points
    row = n_rows - 1

    def axis_line(y: float, positions: Sequence[float], labels: Sequence[str], name: str) -> None:
        positions = np.asarray(positions, float)
        ax.plot([positions.min(), positions.max()], [y, y], color="k", lw=1)
        order = np.argsort(positions)
        below = np.zeros(len(positions), bool)
        for a, b in zip(order[:-1], order[1:], strict=True):
            # Labels closer than a few points alternate above and below the axis.
            if positions[b] - positions[a] < 4.5 and not below[a]:
                below[b] = True
        for x, lab, under in zip(positions, labels, below, strict=True):
            ax.plot([x, x], [y, y + (-0.12 if under else 0.12)], color="k", lw=1)
            ax.text(
                x,
                y - 0.18 if under else y + 0.18,
                lab,
                ha="center",
                va="top" if under else "bottom",
                fontsize=8,
            )
        ax.text(-5, y, name, ha="right", va="center", fontsize=10)

    axis_line(row, np.arange(0, 101, 10), [str(p) for p in range(0, 101, 10)], "Points")
    for s in scales:
        row -= 1
        labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in s.values]
        axis_line(row, s.points, labels, s.variable)
    row -= 1
    total_ticks = year_ticks(total_max) if total_max <= 10 else _nice_ticks(total_max)
    axis_line(row, total_ticks * 100.0 / total_max, [f"{t:g}" for t in total_ticks], "Total points")
    for i, label in enumerate(horizon_labels):
        row -= 1
        probs = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
        totals = np.linspace(0, total_max, 400)
        surv = nomogram.survival_from_points(totals, i)
        # Survival falls with points: place each probability where the curve crosses it.
        keep = (probs <= surv.max()) & (probs >= surv.min())
        xs = np.interp(probs[keep], surv[::-1], totals[::-1]) * 100.0 / total_max
        if xs.size >= 2:
            axis_line(row, xs, [f"{p:g}" for p in probs[keep]], f"{label} survival")
        else:
            ax.text(-5, row, f"{label} survival", ha="right", va="center", fontsize=10)
            ax.text(
                50,
                row,
                f"{surv.min():.2f}-{surv.max():.2f} over the whole range",
                ha="center",
                va="center",
                fontsize=8,
            )
    return fig


def _nice_ticks(top: float) -> np.ndarray:
    for step in (10, 20, 25, 50, 100, 200, 250, 500):
        if top / step <= 10:
            break
    return np.arange(0.0, top + 1e-9, step)
