"""Tile contributions against a stated reference: what each tile adds to a patient's CRCRS.

A patient's CRCRS is split over its tiles against a **reference**, the training cohort's mean
CRCRS (the CRCRS of its average bag: every model is linear in the bag embedding)::

    crcrs = reference + sum_i contribution_i        (every patient, every aggregator)

A positive contribution raises the patient's risk above the training average, a negative one
lowers it. Per fold model ``m`` (standardised and calibrated as the ensemble is), tile ``i``
gets its share of ``risk_m - offset_m`` (:func:`fold_contributions`); the difference between
the reference and ``ensemble_shift`` (which the fold offsets map to) is spread over the tiles by
the models' mean attention. :class:`~mil_crcrs.ensemble.CRCRSModel` computes them in ``risk``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import pandas as pd

    from mil_crcrs.models import MILModel

#: What the sign of a contribution means, for legends, captions and file notes.
CONTRIBUTION_MEANING = (
    "contribution: each tile's share of the CRCRS against contribution_reference, the training "
    "cohort's mean CRCRS (reference + the patient's contributions = CRCRS); positive raises the "
    "patient's risk above the training average, negative lowers it"
)


def contribution_reference(
    training_cohort: Mapping[str, Any],
    metrics: Mapping[str, Any],
    oof_predictions: pd.DataFrame | None,
    ensemble_shift: float,
) -> float:
    """The CRCRS a model's tile contributions are measured against.

    Recorded at fit time in ``config.json`` (``training_cohort.crcrs_mean``, the mean of the
    training cohort's out-of-fold CRCRS, which the calibration makes the mean of the ensemble's
    scores of them too); for a model directory written before, the mean of ``metrics.json``'s
    out-of-fold scores or of ``oof_predictions.csv``, the same number. A model built by hand
    with none of them is measured against ``ensemble_shift``, the CRCRS of a bag every fold
    model scores at its training mean.
    """
    recorded = training_cohort.get("crcrs_mean")
    if recorded is None:
        recorded = (metrics.get("scale") or {}).get("oof_mean")
    if recorded is None and oof_predictions is not None:
        recorded = float(np.mean(oof_predictions["crcrs"]))
    return float(ensemble_shift) if recorded is None else float(recorded)


def fold_contributions(
    model: MILModel,
    features: torch.Tensor,
    mask: torch.Tensor | None,
    grid: torch.Tensor | None,
    risk: torch.Tensor,
    attention: torch.Tensor,
    offset: float,
) -> torch.Tensor:
    """One fold model's tile contributions ``(B, N)`` float64, summing to ``risk - offset``.

    ``MILModel.tile_contributions`` splits ``risk - head.bias`` over the tiles (abmil: tile
    ``i`` gets ``a_i W h_i``). What is left, ``head.bias - offset`` (and for max, transmil or
    discrete-time models the part their split approximates), is spread over the tiles by
    ``attention`` (B, N), so that tile ``i`` of an abmil model gets ``a_i (W h_i + b - offset)``:
    its attention times how far a bag of that tile alone would score above the model's
    training mean ``offset``. ``risk`` is the model's (B,) risk of the bags.
    """
    share = model.tile_contributions(features, mask, grid).double()
    rest = risk.double() - offset - share.sum(1)
    return share + attention * rest[:, None]
