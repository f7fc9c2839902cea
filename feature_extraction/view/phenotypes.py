"""Tile phenotypes for the viewer's third overlay: a table of one class name per tile.

``crcrs view --phenotypes FILE`` reads a CSV or Excel table with the columns ``slide_id``, ``x``,
``y`` (the tile's level-0 top-left corner, as the feature files store it) and ``phenotype`` (a
class name: a tissue classifier's output, a pathologist's annotation, the demo's planted truth).
Tiles without a row have no phenotype. The overlay colours each class with matplotlib's
``tab10`` (then ``tab20``) colours, in the order the classes first appear.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from mil_crcrs.errors import InputError

#: The columns a phenotype table must have.
COLUMNS = ("slide_id", "x", "y", "phenotype")


@dataclass(frozen=True)
class Phenotypes:
    """Class names per tile.

    Attributes
    ----------
    classes : the class names, in order of first appearance
    labels : (slide_id, x, y) -> index into ``classes``
    source : where the table came from, for messages
    """

    classes: tuple[str, ...]
    labels: dict[tuple[str, int, int], int]
    source: str = "<table>"

    def of(self, slide_id: str, coords_level0: np.ndarray) -> np.ndarray:
        """(n,) int64 class index of each tile of ``slide_id`` at ``coords_level0`` (n, 2);
        -1 where the table has no row for it."""
        return np.array(
            [self.labels.get((slide_id, int(x), int(y)), -1) for x, y in coords_level0],
            dtype=np.int64,
        )

    def colours(self) -> list[str]:
        """One ``#rrggbb`` colour per class."""
        import matplotlib

        base = matplotlib.colormaps["tab10" if len(self.classes) <= 10 else "tab20"]
        return [
            "#" + "".join(f"{round(c * 255):02x}" for c in base(i % base.N)[:3])
            for i in range(len(self.classes))
        ]


def read_phenotypes(path: str | os.PathLike) -> Phenotypes:
    """Read a phenotype table (see the module docstring).

    Raises
    ------
    InputError
        for a missing column, a coordinate that is not a whole number, an empty class name, or
        one tile given two classes; the message names the file and line.
    """
    from mil_crcrs.data.tables import read_table, table_line

    table = read_table(path, id_columns=("slide_id", "phenotype"))
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: no column {missing[0]!r} (needs {', '.join(COLUMNS)})")
    classes: dict[str, int] = {}
    labels: dict[tuple[str, int, int], int] = {}
    for i, row in enumerate(table[list(COLUMNS)].itertuples(index=False)):
        where = f"{path}, {table_line(i)}"
        try:
            x, y = float(row.x), float(row.y)
        except (TypeError, ValueError):
            raise InputError(f"{where}: x and y must be level-0 pixel numbers") from None
        name = "" if row.phenotype != row.phenotype else str(row.phenotype).strip()  # NaN
        if not name or not x.is_integer() or not y.is_integer():
            raise InputError(f"{where}: needs a phenotype name and whole-pixel x, y")
        key = (str(row.slide_id), int(x), int(y))
        index = classes.setdefault(name, len(classes))
        if labels.get(key, index) != index:
            raise InputError(f"{where}: tile {key} already has another phenotype")
        labels[key] = index
    return Phenotypes(tuple(classes), labels, str(path))


def phenotype_png(
    labels: np.ndarray,
    coords_level0: np.ndarray,
    tile_edge: float,
    shape: tuple[int, int],
    downsample: float,
    colours: list[str],
) -> bytes:
    """The RGBA PNG of a slide's phenotypes: each class's colour over its tiles, transparent
    where no tile (or no phenotype) is.

    Parameters
    ----------
    labels : (n,) class index per tile (-1 = none)
    coords_level0 : (n, 2) the tiles' level-0 top-left corners
    tile_edge : tile edge in level-0 pixels
    shape : (height, width) of the image; ``downsample``: level-0 pixels per image pixel
    colours : ``#rrggbb`` per class
    """
    from PIL import Image

    from mil_crcrs.explain.paint import paint_tiles

    rgba = np.zeros((*shape, 4), dtype=np.uint8)
    for k, colour in enumerate(colours):
        mine = labels == k
        if not mine.any():
            continue
        painted = np.isfinite(
            paint_tiles(np.ones(int(mine.sum())), coords_level0[mine], tile_edge, shape, downsample)
        )
        rgba[painted] = [int(colour[j : j + 2], 16) for j in (1, 3, 5)] + [255]
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG")
    return buffer.getvalue()
