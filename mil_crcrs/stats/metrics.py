"""Discrimination metrics for risk scores (higher risk = worse outcome).

Thin wrappers over scikit-survival, so that every caller uses one sign convention and one
treatment of degenerate inputs.
"""

from __future__ import annotations

import numpy as np
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import concordance_index_censored


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index of a risk score.

    A pair of patients is comparable when the one with the shorter time had the event; it is
    concordant when that patient also has the higher risk. Ties in risk count one half
    (scikit-survival's :func:`~sksurv.metrics.concordance_index_censored`).

    Parameters
    ----------
    time : (n,) float
        Follow-up times.
    event : (n,) int or bool
        1 = event observed, 0 = censored.
    risk : (n,) float
        Risk scores, higher = worse (shorter survival).

    Returns
    -------
    float
        C in [0, 1]: 1.0 when every comparable pair is ordered correctly, 0.5 for random scores.
        NaN when there is no comparable pair (no event, or the only events are at the last
        times), since C is then undefined.
    """
    time = np.asarray(time, dtype=np.float64).reshape(-1)
    event = np.asarray(event).reshape(-1).astype(bool)
    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    if not (time.shape == event.shape == risk.shape):
        raise ValueError(
            f"time, event and risk must have one value per patient, got shapes "
            f"{time.shape}, {event.shape}, {risk.shape}"
        )
    if not event.any():
        return float("nan")
    try:
        return float(concordance_index_censored(event, time, risk)[0])
    except NoComparablePairException:
        return float("nan")
