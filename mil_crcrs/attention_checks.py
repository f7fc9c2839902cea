"""Checks of a trained model against what a simulation planted: does the attention find the
planted tiles? (AUROC of per-tile scores against the planted mask.)"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mil_crcrs.data.cohort import Cohort
from mil_crcrs.data.tables import Columns
from mil_crcrs.errors import InputError
from mil_crcrs.explain.scores import tile_scores

if TYPE_CHECKING:
    from mil_crcrs.data.store import FeatureStore
    from mil_crcrs.ensemble import CRCRSModel


def attention_auroc(
    scores: Sequence[np.ndarray], planted: Sequence[np.ndarray], pooled: bool = False
) -> float:
    """How well per-tile scores rank planted tiles above the others (AUROC).

    Parameters
    ----------
    scores : per bag, (n_tiles,) scores (attention, contribution, ...)
    planted : per bag, (n_tiles,) bool, True for a planted tile
    pooled : False: the mean over bags of each bag's AUROC (bags with planted and unplanted
        tiles only); True: one AUROC over all tiles, attention scaled by the bag's tile count
        (``n a_i``, 1 = uniform attention) so that bags of different sizes are comparable

    Returns
    -------
    float, NaN when no bag has both planted and unplanted tiles

    Notes
    -----
    Uses :func:`sklearn.metrics.roc_auc_score`.
    """
    from sklearn.metrics import roc_auc_score

    if len(scores) != len(planted):
        raise ValueError(f"{len(scores)} score arrays but {len(planted)} planted masks")
    pairs = []
    for s, p in zip(scores, planted, strict=True):
        s, p = np.asarray(s, dtype=np.float64), np.asarray(p, dtype=bool)
        if s.shape != p.shape:
            raise ValueError(f"scores {s.shape} and planted {p.shape} differ in shape")
        pairs.append((s, p))
    if pooled:
        y = np.concatenate([p for _, p in pairs])
        if y.all() or not y.any():
            return float("nan")
        x = np.concatenate([s * s.size for s, _ in pairs])
        return float(roc_auc_score(y, x))
    per_bag = [roc_auc_score(p, s) for s, p in pairs if p.any() and not p.all()]
    return float(np.mean(per_bag)) if per_bag else float("nan")


def planted_auroc(
    model: CRCRSModel,
    features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore,
    planted: Mapping[str, Any],
    clinical: str | os.PathLike | pd.DataFrame | Cohort | None = None,
    columns: Columns = Columns(),
    by: str = "attention",
    pooled: bool = False,
    above_reference: bool = False,
) -> float:
    """The AUROC of a trained model's per-tile scores for the planted tiles of a cohort.

    Parameters
    ----------
    model : the trained ensemble
    features : the cohort's feature files
    planted : slide id -> the truth per tile: a (n_tiles,) bool array in the feature file's row
        order (e.g. :attr:`mil_crcrs.simulate.SimulatedCohort.planted`), or an object with
        ``is_planted(coords_level0, tile_size_level0) -> (n_tiles,) bool`` (e.g. a slide-level
        demo cohort's planted region); every slide of the cohort needs an entry
    clinical : the table grouping slides into patients (None = each file is a patient)
    columns : its column names
    by : score tiles by "attention" or "contribution"
    pooled : see :func:`attention_auroc`
    above_reference : only the patients whose CRCRS is above the model's contribution
        reference: there the planted tiles are what raises the risk, so their signed
        contributions should rank first; below it they may rightly lower it

    Returns
    -------
    float (see :func:`attention_auroc`)
    """
    from mil_crcrs.data.inputs import open_inputs

    inputs = open_inputs(features, clinical, columns, model.time_unit)
    values, truth = [], []
    for bag in inputs.bags:
        scores = tile_scores(model, bag)
        if above_reference and not scores.crcrs > model.contribution_reference:
            continue
        masks = []
        for k, sid in enumerate(bag.slide_ids):
            if sid not in planted:
                raise InputError(f"slide '{sid}': no planted-tile truth for it")
            rows = bag.tile_slide == k
            truth_k = planted[sid]
            if hasattr(truth_k, "is_planted"):
                size = inputs.store.info(sid).tile_size_level0
                truth_k = truth_k.is_planted(bag.coords[rows], size)
            truth_k = np.asarray(truth_k, dtype=bool)
            if truth_k.shape != (int(rows.sum()),):
                raise InputError(
                    f"slide '{sid}': planted mask has {truth_k.shape} entries for "
                    f"{int(rows.sum())} tiles"
                )
            masks.append(truth_k)
        values.append(scores.values(by))
        truth.append(np.concatenate(masks))
    return attention_auroc(values, truth, pooled=pooled)
