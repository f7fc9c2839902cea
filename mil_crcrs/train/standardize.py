"""Per-dimension feature standardisation, fitted on a fold's training part and kept with its model.

Foundation-model features are unevenly scaled: some dimensions vary a hundred times more than
others and most have non-zero means, so the first linear layer of a MIL model (and AdamW's
weight decay, which treats every weight alike) sees a badly conditioned input. With
``FitSettings(standardize=True)`` each fold model reads ``(x - mean) / sd`` per dimension, where
``mean`` and ``sd`` are pooled over every tile of that fold's **training part** (its training
and inner-validation patients, never the fold it reports), so no statistic of a held-out patient
reaches the model that scores them.

The statistics live *inside* the fold model, as a :class:`FeatureNorm` submodule named
``input_norm`` with two buffers, ``input_norm.mean`` and ``input_norm.sd``. Every path that
applies a fold model (training, inner validation, out-of-fold scores, ``predict``, attention
heatmaps, Grad-CAM) calls its ``forward`` or ``tile_contributions``, which apply the
standardisation first (see ``MILModel._prepare``), so no path can forget it. The buffers are
saved with the weights in ``fold_<k>.pt`` as plain tensors and read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mil_crcrs.data.bags import PatientBag
from mil_crcrs.errors import InputError

#: A dimension whose sd is at most this (relative to 1 + |mean|) is constant: it is centred but
#: not scaled (sd stored as 1), rather than divided by ~0.
CONSTANT_SD = 1e-8


class FeatureNorm(nn.Module):
    """``(x - mean) / sd`` over the last dimension.

    Parameters
    ----------
    mean : (dim,) per-dimension mean
    sd : (dim,) per-dimension standard deviation, all positive
    """

    def __init__(self, mean: Tensor | np.ndarray, sd: Tensor | np.ndarray) -> None:
        super().__init__()
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float32))
        sd = torch.as_tensor(np.asarray(sd, dtype=np.float32))
        if mean.ndim != 1 or mean.shape != sd.shape:
            raise ValueError(
                f"mean and sd must be (dim,), got {tuple(mean.shape)}, {tuple(sd.shape)}"
            )
        if not bool(torch.all(sd > 0)) or not bool(torch.all(torch.isfinite(mean))):
            raise ValueError("sd must be positive and mean finite")
        self.register_buffer("mean", mean)
        self.register_buffer("sd", sd)

    @classmethod
    def placeholder(cls, dim: int) -> FeatureNorm:
        """A norm of the right shape (mean 0, sd 1), for ``load_state_dict`` to fill."""
        return cls(np.zeros(dim), np.ones(dim))

    def forward(self, features: Tensor) -> Tensor:
        """(..., dim) -> (..., dim), in the dtype of ``features`` where it is floating."""
        dtype = features.dtype if features.is_floating_point() else torch.float32
        return ((features - self.mean) / self.sd).to(dtype)


def feature_moments(
    bags: Sequence[PatientBag], indices: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and sd over every tile of ``bags[indices]``, streamed bag by bag.

    Each bag's own mean and centred sum of squares are computed in float64 and merged with
    Chan et al.'s pairwise update, so dimensions with large means and small spreads lose no
    precision and only one bag is in memory at a time (beyond what ``bags`` caches).

    Parameters
    ----------
    bags : the cohort's bags
    indices : positions of the bags to pool (the fold's training part)

    Returns
    -------
    mean : (dim,) float64
    sd : (dim,) float64, the population sd over tiles; 1 where a dimension is constant

    Raises
    ------
    InputError
        No tiles, or a non-finite feature value (named with the patient).
    """
    count = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    for i in np.asarray(indices, dtype=np.int64):
        bag = bags[int(i)]
        x = np.asarray(bag.features, dtype=np.float64)
        if x.shape[0] == 0:
            continue
        if not np.isfinite(x).all():
            raise InputError(f"patient {bag.patient_id}: features hold NaN or infinite values")
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        if mean is None or m2 is None:
            count, mean, m2 = n_b, mean_b, m2_b
            continue
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total
    if mean is None or m2 is None:
        raise InputError("feature standardisation: the training part has no tiles")
    sd = np.sqrt(m2 / count)
    sd = np.where(sd <= CONSTANT_SD * (1.0 + np.abs(mean)), 1.0, sd)
    return mean, sd


def attach_feature_norm(model: nn.Module, mean: np.ndarray, sd: np.ndarray) -> nn.Module:
    """Give ``model`` an ``input_norm`` (a :class:`FeatureNorm`) and return it.

    The norm is a submodule: it moves with ``model.to(device)`` and is saved in its state dict.
    """
    model.input_norm = FeatureNorm(mean, sd)
    return model


def has_feature_norm(model: nn.Module) -> bool:
    """True when ``model`` standardises its input."""
    return isinstance(getattr(model, "input_norm", None), FeatureNorm)
