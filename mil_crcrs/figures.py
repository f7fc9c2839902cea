"""The one figure factory: matplotlib figures on the Agg canvas, and their PNG output.

matplotlib is imported inside the functions (``import mil_crcrs`` must not import it), and
pyplot is never used, so drawing never touches a user's interactive backend. The report's
figures (:mod:`mil_crcrs.stats.plots`) and the heatmaps (:mod:`mil_crcrs.explain`) both start
from :func:`new_figure`.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

import numpy as np

from mil_crcrs.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(width_in: float, height_in: float, dpi: int = 110) -> Figure:
    """An empty figure of ``width_in`` x ``height_in`` inches, drawn on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    _save(fig, buf)
    return buf.getvalue()


def write_png(path: str | os.PathLike, image: np.ndarray | Figure) -> None:
    """Write an RGB array (H, W, 3) uint8 or a figure as a PNG, atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        if isinstance(image, np.ndarray):
            from matplotlib.image import imsave

            imsave(tmp, image, format="png")
        else:
            _save(image, tmp, bbox_inches="tight")


def _save(fig: Figure, target: io.BytesIO | os.PathLike, **kwargs) -> None:
    """``fig.savefig`` with every text shown as written: ids, column names and category levels
    come from users' tables, and matplotlib would read ``$...$`` in them as maths (and fail on
    an unbalanced ``$``). Texts made before saving are switched off one by one; tick labels,
    made while drawing, under the rc setting."""
    from matplotlib import rc_context
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
    with rc_context({"text.parse_math": False}):
        fig.savefig(target, format="png", **kwargs)
