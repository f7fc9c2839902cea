"""Survival losses over a batch of bags: Cox partial likelihood and discrete-time hazards.

Conventions: ``event = 1`` is an observed event, 0 censored; ``risk`` is on the log-hazard scale,
higher = worse. Both losses are vectorised over the batch (no Python loop over patients).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mil_crcrs.errors import InputError

TIES = ("efron", "breslow")
#: The training losses ``FitSettings.loss`` chooses from: Cox partial likelihood, discrete time.
LOSS_NAMES = ("cox", "discrete")


def _as_like(values: Tensor | np.ndarray, like: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(values, device=like.device).to(dtype).reshape(-1)


def cox_nll(
    risk: Tensor,
    time: Tensor | np.ndarray,
    event: Tensor | np.ndarray,
    ties: str = "efron",
) -> Tensor:
    """Negative Cox log partial likelihood of a batch, divided by its number of events.

    The risk set of an event at time ``t`` is every bag of the batch with time ``>= t``. Tied
    event times are handled by Efron's approximation (default) or Breslow's.

    Parameters
    ----------
    risk : (B,) float, log-hazard-scale risk, higher = worse
    time : (B,) observed times (any unit; only their order matters)
    event : (B,) 1 for an observed event, 0 for censored
    ties : ``"efron"`` or ``"breslow"``

    Returns
    -------
    Scalar tensor in ``risk``'s dtype. A batch with no events gives 0, still attached to the
    graph (``risk.sum() * 0``).

    Notes
    -----
    For events ``i`` at distinct times ``t_j`` with ``d_j`` tied events ``D_j``, risk set
    ``R_j`` and ``E_j = sum_{i in D_j} exp(risk_i)``, Efron's log likelihood is
    ``sum_j [sum_{i in D_j} risk_i - sum_{l=0}^{d_j-1} log(sum_{R_j} exp(risk) - l/d_j E_j)]``;
    Breslow's drops the ``l/d_j E_j`` term. Computed in float64 in log space (log-cumsum-exp
    over times sorted once), so large risks neither overflow nor underflow. First derivatives
    only: torch's double backward of ``logcumsumexp`` gives NaN where a gradient is zero.
    """
    if ties not in TIES:
        raise InputError(f"ties={ties!r}: must be one of {', '.join(TIES)}")
    if risk.ndim != 1:
        raise ValueError(f"risk must be 1-D (batch,), got shape {tuple(risk.shape)}")
    work = torch.promote_types(risk.dtype, torch.float64)
    eta = risk.to(work)
    time_t = _as_like(time, risk, work)
    event_t = _as_like(event, risk, work)
    if time_t.shape != eta.shape or event_t.shape != eta.shape:
        raise ValueError("risk, time and event must have the same length")
    n_events = event_t.sum()
    if n_events == 0:
        return risk.sum() * 0.0

    order = torch.argsort(time_t, stable=True)
    eta, time_t, event_t = eta[order], time_t[order], event_t[order]
    # Position of the first and last bag sharing each bag's time.
    first = torch.searchsorted(time_t, time_t, side="left")
    last = torch.searchsorted(time_t, time_t, side="right") - 1
    # log sum of exp(risk) over the risk set {k: time_k >= time_i}.
    log_risk_set = torch.logcumsumexp(eta.flip(0), 0).flip(0)[first]
    log_lik = eta - log_risk_set
    if ties == "efron":
        # Events tied with i: d of them, sum of exp(risk) over them as a share of the risk set,
        # and i's rank l = 0..d-1 among them.
        cum_events = event_t.cumsum(0)
        before = cum_events - event_t
        n_tied = cum_events[last] - before[first]
        rank = before - before[first]
        share = torch.exp(eta - log_risk_set) * event_t
        cum_share = share.cumsum(0)
        tied_share = cum_share[last] - (cum_share - share)[first]
        frac = torch.where(event_t > 0, rank / n_tied.clamp_min(1.0), torch.zeros_like(rank))
        log_lik = log_lik - torch.log1p(-frac * tied_share)
    loss = -(log_lik * event_t).sum() / n_events
    return loss.to(risk.dtype)


def make_time_bins(
    time: np.ndarray | Tensor, event: np.ndarray | Tensor, n_bins: int
) -> np.ndarray:
    """Bin edges for discrete-time survival: quantiles of the observed event times.

    Parameters
    ----------
    time : (n,) observed times
    event : (n,) 1 for an observed event, 0 for censored
    n_bins : number of bins

    Returns
    -------
    (n_bins + 1,) float64 edges, strictly increasing: 0, the ``k / n_bins`` quantiles of the
    event times for ``k = 1..n_bins-1``, and ``inf``. Bin ``k`` is ``[edges[k], edges[k+1])``.

    Raises
    ------
    InputError
        with no events, ``n_bins < 1``, or too few distinct event times for ``n_bins`` bins
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise InputError(f"n_bins={n_bins!r}: must be a positive integer")
    time_a = np.asarray(time, dtype=np.float64).reshape(-1)
    event_a = np.asarray(event).reshape(-1).astype(bool)
    event_times = time_a[event_a]
    if event_times.size == 0:
        raise InputError("no events: discrete-time bins need observed event times")
    inner = np.quantile(event_times, np.arange(1, n_bins) / n_bins)
    edges = np.concatenate([[0.0], inner, [np.inf]])
    if np.any(np.diff(edges) <= 0):
        n_distinct = np.unique(event_times[event_times > 0]).size
        raise InputError(
            f"{n_bins} time bins need distinct quantiles of the event times, but there are "
            f"{n_distinct} distinct positive event times; use fewer bins"
        )
    return edges


def discrete_time_nll(
    logits: Tensor,
    time: Tensor | np.ndarray,
    event: Tensor | np.ndarray,
    edges: np.ndarray | Tensor,
) -> Tensor:
    """Negative log likelihood of discrete-time hazards, mean over bags.

    Bin ``k`` is ``[edges[k], edges[k+1])`` and ``h_k = sigmoid(logits[:, k])`` is the hazard of
    the event in bin ``k`` given survival to it. A bag with an event in bin ``k`` contributes
    ``-log(prod_{j<k}(1 - h_j) h_k)``; a bag censored in bin ``k`` counts as surviving bin ``k``
    and contributes ``-log(prod_{j<=k}(1 - h_j))``.

    Parameters
    ----------
    logits : (B, K) float hazard logits
    time : (B,) observed times, in the unit of ``edges``
    event : (B,) 1 for an observed event, 0 for censored
    edges : (K + 1,) bin edges from :func:`make_time_bins`

    Returns
    -------
    Scalar tensor in ``logits``' dtype.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (batch, bins), got shape {tuple(logits.shape)}")
    n_bins = logits.shape[1]
    edges_t = torch.as_tensor(np.asarray(edges, dtype=np.float64), device=logits.device)
    if edges_t.shape != (n_bins + 1,):
        raise ValueError(f"{n_bins} logits per bag need {n_bins + 1} edges, got {edges_t.numel()}")
    time_t = torch.as_tensor(time, device=logits.device).to(torch.float64).reshape(-1)
    event_t = _as_like(event, logits, logits.dtype)
    if time_t.shape[0] != logits.shape[0] or event_t.shape[0] != logits.shape[0]:
        raise ValueError("logits, time and event must have the same batch size")
    bin_idx = (torch.searchsorted(edges_t, time_t, right=True) - 1).clamp(0, n_bins - 1)
    log_survive = F.logsigmoid(-logits)  # log(1 - h_k)
    log_survive_before = log_survive.cumsum(1) - log_survive  # sum_{j<k} log(1 - h_j)
    idx = bin_idx[:, None]
    at_bin = torch.where(
        event_t[:, None] > 0, F.logsigmoid(logits).gather(1, idx), log_survive.gather(1, idx)
    )
    log_lik = log_survive_before.gather(1, idx) + at_bin
    return -log_lik.mean()


LOSSES: dict[str, Callable[..., Tensor]] = {
    "cox": cox_nll,
    "discrete_time": discrete_time_nll,
}


class LossChoice(Protocol):
    """What :func:`make_loss` reads of the settings (a ``FitSettings`` is one)."""

    @property
    def loss(self) -> str: ...

    @property
    def ties(self) -> str: ...


def make_loss(
    settings: LossChoice, edges: np.ndarray | None = None
) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """The training loss ``loss_fn(output, time, event) -> scalar`` that ``settings.loss``
    names ("cox" with ``settings.ties``, or "discrete" over the time-bin ``edges``); ``output``
    is a model's ``MILOutput``."""
    if settings.loss == "cox":
        ties = settings.ties

        def cox(output, time, event):
            return cox_nll(output.risk, time, event, ties=ties)

        return cox
    if edges is None:
        raise ValueError("the discrete-time loss needs time-bin edges")

    def discrete(output, time, event):
        return discrete_time_nll(output.logits, time, event, edges)

    return discrete
