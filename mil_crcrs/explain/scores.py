"""A patient's per-tile scores from the ensemble, and their top and bottom tiles.

:func:`tile_scores` asks the trained ensemble for one patient's CRCRS, attention and
contributions (:meth:`~mil_crcrs.ensemble.CRCRSModel.patient_attention`), all from the
**patient-level** model: a patient's slides are one bag, so one softmax covers all of them.

- ``attention``: the fold models' mean attention, summing to 1 over the patient's tiles;
- ``contribution``: each tile's share of the CRCRS against a stated reference, the training
  cohort's mean CRCRS (:attr:`~mil_crcrs.ensemble.CRCRSModel.contribution_reference`):
  ``reference + sum of contributions = CRCRS``. Positive raises the patient's risk above the
  training cohort's average, negative lowers it.

:func:`select_tiles` picks the tiles a gallery shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mil_crcrs.errors import SettingError

if TYPE_CHECKING:
    from mil_crcrs.data.bags import PatientBag
    from mil_crcrs.ensemble import CRCRSModel

#: The model's own per-tile values.
VALUE_KINDS = ("attention", "contribution")


@dataclass(frozen=True)
class TileScores:
    """One patient's per-tile scores from the model ensemble.

    Attributes
    ----------
    patient_id : str
    crcrs : the patient's CRCRS
    slide_ids : the patient's slides, in bag order
    tile_slide : (n_tiles,) int64 index into ``slide_ids`` of each tile's slide
    coords : (n_tiles, 2) int64 level-0 top-left (x, y); -1 where a file has no coords
    attention : (n_tiles,) float64, sums to 1 over all of the patient's tiles
    contribution : (n_tiles,) float64, each tile's share of ``crcrs - reference``
    reference : the CRCRS the contributions are measured against (NaN when unknown):
        ``reference + contribution.sum() == crcrs``
    extra : other per-tile values by kind, e.g. ``{"integrated_gradients": (n_tiles,)}``
    """

    patient_id: str
    crcrs: float
    slide_ids: tuple[str, ...]
    tile_slide: np.ndarray
    coords: np.ndarray
    attention: np.ndarray
    contribution: np.ndarray
    reference: float = float("nan")
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_tiles(self) -> int:
        return int(self.attention.shape[0])

    def values(self, kind: str) -> np.ndarray:
        """(n_tiles,) the ``kind`` ("attention", "contribution" or an extra kind) of every tile."""
        if kind == "attention":
            return self.attention
        if kind == "contribution":
            return self.contribution
        if kind in self.extra:
            return np.asarray(self.extra[kind], dtype=np.float64)
        raise ValueError(f"no per-tile {kind!r} values for patient {self.patient_id}")

    def slide_rows(self, slide_id: str) -> np.ndarray:
        """(n,) bag indices of the tiles of ``slide_id``, in the slide file's row order."""
        return np.flatnonzero(self.tile_slide == self.slide_ids.index(slide_id))

    def row_in_slide(self) -> np.ndarray:
        """(n_tiles,) each tile's row in its own slide's feature file."""
        rows = np.empty(self.n_tiles, dtype=np.int64)
        for k in range(len(self.slide_ids)):
            idx = np.flatnonzero(self.tile_slide == k)
            rows[idx] = np.arange(idx.size)
        return rows


def tile_scores(model: CRCRSModel, bag: PatientBag) -> TileScores:
    """The ensemble's CRCRS, attention and contributions for every tile of one patient.

    Parameters
    ----------
    model : the trained ensemble
    bag : the patient's tiles (all slides), scored where the model is

    Returns
    -------
    TileScores
    """
    crcrs, attention, contribution = model.patient_attention(bag)
    return TileScores(
        patient_id=bag.patient_id,
        crcrs=float(crcrs),
        slide_ids=tuple(bag.slide_ids),
        tile_slide=np.asarray(bag.tile_slide, dtype=np.int64),
        coords=np.asarray(bag.coords, dtype=np.int64),
        attention=np.asarray(attention, dtype=np.float64),
        contribution=np.asarray(contribution, dtype=np.float64),
        reference=model.contribution_reference,
    )


def select_tiles(scores: TileScores, k: int = 8, by: str = "attention") -> pd.DataFrame:
    """The ``k`` top and ``k`` bottom tiles of a patient, ranked by attention or contribution.

    Top by attention are the most attended tiles, bottom the least; top by contribution are the
    tiles that raise the risk most, bottom those that lower it most. A tile is never in both
    groups (with fewer than ``2 k`` tiles the bottom group is smaller). Ties keep bag order.

    Returns
    -------
    DataFrame with one row per selected tile: ``patient_id``, ``group`` ("top"/"bottom"),
    ``rank`` (1 = most extreme), ``slide_id``, ``tile`` (row in the slide's feature file),
    ``bag_index`` (row in the patient's bag), ``x``, ``y`` (level-0), ``attention``,
    ``contribution``, ``crcrs``, ``contribution_reference`` (the CRCRS the contributions are
    measured against: the patient's contributions sum to ``crcrs - contribution_reference``).
    """
    if by not in VALUE_KINDS:
        raise SettingError("by", f"must be one of {', '.join(VALUE_KINDS)}, got {by!r}")
    values = scores.values(by)
    order = np.argsort(-values, kind="stable")
    k_top = min(k, scores.n_tiles)
    k_bottom = min(k, scores.n_tiles - k_top)
    top = order[:k_top]
    bottom = np.argsort(values, kind="stable")
    bottom = bottom[~np.isin(bottom, top)][:k_bottom]
    rows_in_slide = scores.row_in_slide()
    records = []
    for group, picked in (("top", top), ("bottom", bottom)):
        for rank, i in enumerate(picked, start=1):
            records.append(
                {
                    "patient_id": scores.patient_id,
                    "group": group,
                    "rank": rank,
                    "slide_id": scores.slide_ids[scores.tile_slide[i]],
                    "tile": int(rows_in_slide[i]),
                    "bag_index": int(i),
                    "x": int(scores.coords[i, 0]),
                    "y": int(scores.coords[i, 1]),
                    "attention": float(scores.attention[i]),
                    "contribution": float(scores.contribution[i]),
                    "crcrs": scores.crcrs,
                    "contribution_reference": scores.reference,
                }
            )
    columns = [
        "patient_id",
        "group",
        "rank",
        "slide_id",
        "tile",
        "bag_index",
        "x",
        "y",
        "attention",
        "contribution",
        "crcrs",
        "contribution_reference",
    ]
    return pd.DataFrame.from_records(records, columns=columns)
