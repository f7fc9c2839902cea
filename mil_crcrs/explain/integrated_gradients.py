"""Integrated gradients of the CRCRS on a patient's stored tile features.

:func:`feature_integrated_gradients` is the feature-level view of what drives a patient's score:
captum's :class:`~captum.attr.IntegratedGradients` of the patient's CRCRS (the ensemble's one
differentiable :meth:`~mil_crcrs.ensemble.CRCRSModel.risk`) with respect to every tile's stored
feature, summed per tile. It needs no slide and no encoder; painted as the
``integrated_gradients`` map of :mod:`mil_crcrs.explain.render`. Pixel-level attribution through
the encoder is Grad-CAM (:mod:`feature_extraction.explain.gradcam`).

captum is imported inside the function that uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mil_crcrs.data.cache import to_cache_dtype
from mil_crcrs.errors import SettingError

if TYPE_CHECKING:
    from mil_crcrs.data.bags import PatientBag
    from mil_crcrs.ensemble import CRCRSModel

#: What replaces the features along the integration path: every feature zero, or every tile
#: the mean of the patient's tiles.
IG_BASELINES = ("zeros", "bag_mean")
#: IntegratedGradients evaluates the bag at this many floats at most per internal batch.
IG_BATCH_FLOATS = 1 << 26


def bag_tensors(model: CRCRSModel, bag: PatientBag) -> tuple[Tensor, Tensor]:
    """The bag's features (N, D) float32 and grid (N, 2) int64, on the fold models' device."""
    features = torch.as_tensor(np.asarray(bag.features, dtype=np.float32), device=model.device)
    grid = torch.as_tensor(np.asarray(bag.grid), dtype=torch.long, device=model.device)
    return features, grid


@dataclass(frozen=True)
class FeatureAttribution:
    """Integrated gradients of the CRCRS with respect to a patient's tile features.

    Attributes
    ----------
    per_tile : (n_tiles,) float64, each tile's attribution summed over feature dims
    crcrs : the patient's CRCRS
    baseline_crcrs : the CRCRS of the baseline bag
    delta : captum's convergence delta (``per_tile.sum() - (crcrs - baseline_crcrs)``)
    """

    per_tile: np.ndarray
    crcrs: float
    baseline_crcrs: float
    delta: float


def feature_integrated_gradients(
    model: CRCRSModel,
    bag: PatientBag,
    baseline: str = "zeros",
    n_steps: int = 32,
) -> FeatureAttribution:
    """captum :class:`~captum.attr.IntegratedGradients` of the CRCRS on the tile features.

    Parameters
    ----------
    model : the trained ensemble
    bag : the patient's tiles
    baseline : "zeros" or "bag_mean" (see :data:`IG_BASELINES`)
    n_steps : integration steps (Gauss-Legendre, captum's default)

    Returns
    -------
    FeatureAttribution; by completeness ``per_tile.sum()`` is close to
    ``crcrs - baseline_crcrs`` (``delta`` says how close).
    """
    from captum.attr import IntegratedGradients

    if baseline not in IG_BASELINES:
        raise SettingError(
            "baseline", f"must be one of {', '.join(IG_BASELINES)}, got {baseline!r}"
        )
    bag = to_cache_dtype(bag)  # the features as fit, predict() and patient_attention score them
    features, grid = bag_tensors(model, bag)
    x = features[None]
    reference = torch.zeros_like(x) if baseline == "zeros" else x.mean(1, keepdim=True).expand_as(x)
    forward: Callable[[Tensor], Tensor] = lambda f: model.risk(f, grid=grid)[0]  # noqa: E731
    per_batch = max(1, min(n_steps, IG_BATCH_FLOATS // max(1, x[0].numel())))
    attributions, delta = IntegratedGradients(forward).attribute(
        x,
        baselines=reference.contiguous(),
        n_steps=n_steps,
        internal_batch_size=per_batch,
        return_convergence_delta=True,
    )
    with torch.no_grad():
        crcrs = float(forward(x)[0])
        base = float(forward(reference.contiguous())[0])
    return FeatureAttribution(
        per_tile=attributions[0].sum(-1).detach().double().cpu().numpy(),
        crcrs=crcrs,
        baseline_crcrs=base,
        delta=float(delta.reshape(-1)[0]),
    )
