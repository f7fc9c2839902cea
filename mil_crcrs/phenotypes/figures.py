"""The phenotype atlas's pictures: a 2-D map of a tile sample, the forest plot of the
phenotype fractions, slide maps coloured by phenotype, and the galleries' layout.

The 2-D map is UMAP (umap-learn) of the tiles' PCA coordinates; where umap-learn is not
installed it falls back to the first two PCA axes and says so in the figure. matplotlib and
umap are imported inside the functions that use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mil_crcrs.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Tiles at most in the 2-D map (UMAP's time grows with them).
MAP_TILES = 5000


def phenotype_colours(k: int) -> np.ndarray:
    """(K, 3) uint8 distinct colours, phenotype i + 1 in row i (tab10, then tab20)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return (np.asarray([cmap(i % cmap.N)[:3] for i in range(k)]) * 255).round().astype(np.uint8)


def embed_2d(points: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """(m, 2) a 2-D embedding of points (m, p), and the method's name ("UMAP" or "PCA")."""
    points = np.asarray(points, dtype=np.float32)
    if points.shape[0] < 5:
        return points[:, :2], "PCA"
    try:
        import umap
    except ImportError:  # an optional extra
        return points[:, :2], "PCA (umap-learn not installed)"
    reducer = umap.UMAP(
        n_neighbors=min(15, points.shape[0] - 1), random_state=seed, n_jobs=1, min_dist=0.2
    )
    return np.asarray(reducer.fit_transform(points)), "UMAP"


def map_figure(
    xy: np.ndarray, phenotype: np.ndarray, contribution: np.ndarray, k: int, method: str
) -> Figure:
    """Two panels of the same 2-D map of tiles: coloured by phenotype and by contribution.

    Parameters
    ----------
    xy : (m, 2) the map's coordinates
    phenotype : (m,) int in 1..K
    contribution : (m,) each tile's contribution to its patient's CRCRS
    k : number of phenotypes
    method : how the map was made (the axis labels say it)
    """
    from matplotlib.colors import TwoSlopeNorm

    colours = phenotype_colours(k) / 255.0
    fig = new_figure(12.0, 5.4)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i in range(1, k + 1):
        sel = phenotype == i
        ax1.scatter(xy[sel, 0], xy[sel, 1], s=3, color=colours[i - 1], label=f"P{i}", alpha=0.7)
        if sel.any():
            cx, cy = np.median(xy[sel], axis=0)
            ax1.text(cx, cy, f"P{i}", fontsize=9, weight="bold", ha="center", va="center")
    ax1.legend(markerscale=4, fontsize=7, loc="best", ncol=2 if k > 8 else 1)
    ax1.set_title(f"{len(xy)} tiles by phenotype", fontsize=10)
    bound = float(np.percentile(np.abs(contribution), 99)) or 1.0
    order = np.argsort(np.abs(contribution))  # the strongest drawn last, on top
    points = ax2.scatter(
        xy[order, 0],
        xy[order, 1],
        s=3,
        c=contribution[order],
        cmap="RdBu_r",
        norm=TwoSlopeNorm(0.0, -bound, bound),
    )
    fig.colorbar(points, ax=ax2, label="contribution to the CRCRS")
    ax2.set_title("the same tiles by contribution (red raises the risk)", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def forest_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The phenotype table as :func:`mil_crcrs.stats.plots.forest_figure` rows."""
    label = [
        f"P{int(r.phenotype)} ({100 * r.share:.0f}% of tiles, contr. {r.mean_contribution:+.2g})"
        for r in table.itertuples()
    ]
    return pd.DataFrame(
        {
            "label": label,
            "hr": table["hr_per_sd"],
            "hr_lower": table["hr_lower"],
            "hr_upper": table["hr_upper"],
            "p": table["p"],
            "note": table["note"],
        }
    )


def forest_figure(table: pd.DataFrame, title: str) -> Figure:
    """Hazard ratio per SD of each phenotype's fraction, with its 95% CI (log axis); a figure
    saying why where no phenotype has an estimate."""
    from mil_crcrs.stats.plots import forest_figure as draw

    rows = forest_rows(table)
    estimates = rows[["hr", "hr_lower", "hr_upper"]].to_numpy(dtype=np.float64)
    if not (np.isfinite(estimates).all(axis=1) & (estimates > 0).all(axis=1)).any():
        fig = new_figure(7.0, 1.2)
        notes = sorted({str(n) for n in rows["note"] if isinstance(n, str) and n})
        text = f"{title}\nno hazard ratio could be estimated" + (
            f": {'; '.join(notes)}" if notes else ""
        )
        fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
        return fig
    return draw(rows, title)


def slide_map(
    phenotype: np.ndarray,
    coords_level0: np.ndarray,
    tile_size_level0: float,
    background: np.ndarray,
    downsample: float,
    k: int,
    alpha: float = 0.55,
) -> np.ndarray:
    """(H, W, 3) uint8 the background (thumbnail or blank canvas) with each tile in its
    phenotype's colour.

    Parameters
    ----------
    phenotype : (n,) int in 1..K
    coords_level0 : (n, 2) top-left (x, y) in level-0 pixels
    tile_size_level0 : tile edge in level-0 pixels
    background : (H, W, 3) uint8 at ``downsample`` level-0 pixels per pixel
    downsample : level-0 pixels per canvas pixel
    k : number of phenotypes
    alpha : opacity of the colours
    """
    from mil_crcrs.explain.paint import paint_tiles

    shape = background.shape[:2]
    painted = paint_tiles(phenotype, coords_level0, tile_size_level0, shape, downsample)
    covered = np.isfinite(painted)
    index = np.clip(np.nan_to_num(painted).round().astype(np.int64) - 1, 0, k - 1)
    colours = phenotype_colours(k)[index]
    out = background.astype(np.float64)
    out[covered] = (1 - alpha) * out[covered] + alpha * colours[covered]
    return out.round().astype(np.uint8)


def slide_map_figure(image: np.ndarray, title: str, present: np.ndarray, k: int) -> Figure:
    """A slide map (:func:`slide_map`) with a legend of the phenotypes ``present`` on it."""
    from matplotlib.patches import Patch

    height, width = image.shape[:2]
    scale = 7.0 / max(height, width)
    fig = new_figure(max(3.0, width * scale) + 1.6, max(2.5, height * scale) + 0.5)
    ax = fig.add_axes((0.02, 0.02, 0.75, 0.9))
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9, loc="left")
    colours = phenotype_colours(k) / 255.0
    handles = [Patch(color=colours[i - 1], label=f"P{i}") for i in sorted(set(present.tolist()))]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    return fig
