"""Figures of the explanation: a heatmap with its colorbar, and galleries of tiles.

matplotlib is imported inside the functions (through :func:`mil_crcrs.figures.new_figure`);
:func:`mil_crcrs.figures.write_png` writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mil_crcrs.explain.paint import colormap
from mil_crcrs.figures import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mil_crcrs.explain.render import SlideHeatmap


def heatmap_figure(heatmap: SlideHeatmap, title: str | None = None) -> Figure:
    """The heatmap with a colorbar labelled in the values' own units, and a title.

    The figure is laid out in inches around the image's own aspect ratio, so the image fills its
    axes: no blank band above or below it, however wide or tall the slide.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    height, width = heatmap.image.shape[:2]
    dpi = 100
    # Longest side 400-1400 px: small canvases are enlarged (nearest), large ones reduced.
    scale = min(1400.0 / max(width, height), max(1.0, 400.0 / max(width, height)))
    img_w, img_h = width * scale / dpi, height * scale / dpi
    pad, title_h, gap, bar_w, labels_w = 0.1, 0.6, 0.25, 0.2, 1.2
    fig_w = pad + img_w + gap + bar_w + labels_w
    fig_h = pad + img_h + title_h
    fig = new_figure(fig_w, fig_h, dpi=dpi)
    ax = fig.add_axes((pad / fig_w, pad / fig_h, img_w / fig_w, img_h / fig_h))
    ax.imshow(heatmap.image, interpolation="nearest", aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():  # a thin frame shows the slide's extent on a blank canvas
        spine.set_edgecolor("#bbbbbb")
    bar_h = min(img_h, 4.0)
    cax = fig.add_axes(
        (
            (pad + img_w + gap) / fig_w,
            (pad + (img_h - bar_h) / 2) / fig_h,
            bar_w / fig_w,
            bar_h / fig_h,
        )
    )
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormap(heatmap.cmap)), cax=cax)
    ticks = np.linspace(0.0, 1.0, 5 if bar_h >= 2.0 else 3)
    s = heatmap.scale
    bar.set_ticks(ticks, labels=tick_labels(s.low + ticks * (s.high - s.low)))
    labels = {
        "contribution": "contribution to CRCRS\n+ raises risk above reference\n"
        "\u2212 lowers it below",
        "integrated_gradients": "integrated gradients",
    }
    bar.set_label(labels.get(heatmap.kind, heatmap.kind), fontsize=8)
    against = ""
    if heatmap.kind == "contribution":
        against = f" = reference {heatmap.reference:.3f} + sum of tiles"
    fig.suptitle(
        title
        or f"{heatmap.patient_id} / {heatmap.slide_id}\n{heatmap.kind}, "
        f"CRCRS {heatmap.crcrs:.3f}{against}, {heatmap.n_tiles} tiles",
        fontsize=10,
        y=1.0 - 0.08 / fig_h,
        va="top",
    )
    return fig


def tick_labels(values: np.ndarray) -> list[str]:
    """The shortest labels (3 to 8 significant digits) that tell distinct ``values`` apart."""
    for digits in range(3, 9):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(set(np.round(values, 12))):
            return labels
    return labels


def tile_gallery_figure(
    rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[str]]], tile_inches: float = 1.6
) -> Figure:
    """Rows of tile images with a caption under each tile.

    Caption lines too long for a tile's width are wrapped (at hyphens and dots first, as in
    slide ids) and rows are spaced for the longest caption, so captions never overlap each other
    or the next row.

    Parameters
    ----------
    rows : per row, (row title, tile images (h, w, 3) uint8, one caption per tile)
    tile_inches : the drawn size of a tile

    Returns
    -------
    Figure
    """
    rows = [r for r in rows if len(r[1])]
    n_cols = max((len(r[1]) for r in rows), default=1)
    n_rows = max(1, len(rows))
    font, gap = 7, 0.15
    chars = max(8, int((tile_inches + 0.8 * gap) * 72 / (0.62 * font)))
    wrapped = [[_wrap_caption(c, chars) for c in r[2]] for r in rows]
    n_lines = max((c.count("\n") + 1 for r in wrapped for c in r), default=1)
    top, title_h, caption_h = 0.5, 0.3, 0.1 + n_lines * font * 1.3 / 72
    row_h = title_h + tile_inches + caption_h
    fig_w = 0.4 + n_cols * tile_inches + (n_cols - 1) * gap
    fig_h = top + n_rows * row_h
    fig = new_figure(fig_w, fig_h, dpi=100)
    for r, ((title, images, _), captions) in enumerate(zip(rows, wrapped, strict=True)):
        bottom = fig_h - top - r * row_h - title_h - tile_inches
        for c, (image, caption) in enumerate(zip(images, captions, strict=True)):
            left = 0.2 + c * (tile_inches + gap)
            ax = fig.add_axes(
                (left / fig_w, bottom / fig_h, tile_inches / fig_w, tile_inches / fig_h)
            )
            ax.imshow(image, interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(caption, fontsize=font, labelpad=3)
            if c == 0:
                ax.set_title(title, fontsize=9, loc="left")
    if not rows:
        fig.text(0.5, 0.5, "no tiles", ha="center")
    return fig


def _wrap_caption(caption: str, width: int) -> str:
    """``caption`` with every line wrapped to ``width`` characters: at spaces, and a word too
    long for a line (an id) after - . _ (a number such as ``+0.087`` is never split)."""
    import re

    def pieces(line: str) -> list[str]:
        words = re.findall(r"\S+\s*|\s+", line)
        return [
            part
            for word in words
            for part in (
                [word]
                if len(word.rstrip()) <= width
                else re.findall(r"[^-._]*[-._]|[^-._]+$", word)
            )
        ]

    out = []
    for line in caption.split("\n"):
        current = ""
        for token in pieces(line):
            while len(token) > width:  # a piece longer than a line is cut
                if current:
                    out.append(current.rstrip())
                    current = ""
                out.append(token[:width])
                token = token[width:]
            if len((current + token).rstrip()) > width:
                out.append(current.rstrip())
                current = ""
            current += token
        out.append(current.rstrip())
    return "\n".join(out)
