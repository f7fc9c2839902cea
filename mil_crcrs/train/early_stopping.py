"""Early stopping on an inner validation split: which epoch's weights a fold model keeps.

Early stopping. A 40-patient inner split gives a C-index that jumps by several hundredths
between epochs, so the epoch with the best raw C is largely the luckiest one. The rule is
configurable: ``monitor`` is the inner split's Harrell C (``"c"``) or its training loss
(``"loss"``: the Cox partial likelihood over the whole inner split, or the discrete-time
likelihood), which uses the size of every risk difference rather than only their order; the
monitored value can be averaged over the last ``smooth_epochs`` epochs; no epoch before
``min_epochs`` is chosen or counts towards ``patience``; and the weights kept can be the average
of the last ``average_epochs`` epochs up to the chosen one (as stochastic weight averaging
does). ``monitor="c"`` with all three at 1 is the plain rule: the weights of the epoch with the
best inner C, stopping after ``patience`` epochs without a better one.
"""

from __future__ import annotations

import copy
import math
from collections import deque

import numpy as np
import torch
from torch import nn


class EarlyStopping:
    """Which epoch's weights to keep, from one inner-validation score per epoch (higher = better).

    Parameters
    ----------
    patience : stop after this many epochs (from ``min_epochs`` on) without a better smoothed
        score; None = never stop early
    min_epochs : no epoch before this one is chosen or counts towards ``patience``
    smooth_epochs : the score compared is the mean of the last this-many epochs' scores
    average_epochs : the weights kept are the mean of the last this-many epochs' weights up to
        the chosen epoch (1 = that epoch's own weights); buffers come from the chosen epoch
    """

    def __init__(
        self,
        patience: int | None = 10,
        min_epochs: int = 1,
        smooth_epochs: int = 1,
        average_epochs: int = 1,
    ) -> None:
        self.patience = patience
        self.min_epochs = min_epochs
        self.scores: deque[float] = deque(maxlen=max(1, smooth_epochs))
        self.recent: deque[dict[str, torch.Tensor]] = deque(maxlen=max(1, average_epochs))
        self.best_score, self.best_epoch, self.since_best = -math.inf, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, score: float | None, model: nn.Module) -> bool:
        """Record epoch ``epoch`` (1-based) with its ``score`` (None or NaN = not scored);
        returns True when training should stop."""
        if self.recent.maxlen > 1:
            self.recent.append(copy.deepcopy(model.state_dict()))
        if score is None or math.isnan(score):
            return False
        self.scores.append(score)
        if epoch < self.min_epochs:
            return False
        smoothed = float(np.mean(self.scores))
        if smoothed > self.best_score:
            self.best_score, self.best_epoch, self.since_best = smoothed, epoch, 0
            self.best_state = self._weights(model)
            return False
        self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience

    def _weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state = copy.deepcopy(model.state_dict())
        if len(self.recent) > 1:
            params = {name for name, _ in model.named_parameters()}
            for name in params & set(state):
                state[name] = torch.stack([s[name] for s in self.recent]).mean(0)
        return state

    def restore(self, model: nn.Module, epochs_run: int) -> int:
        """Load the kept weights into ``model``; returns the chosen epoch. Without any scored
        epoch the weights are those of the last epoch(s) (averaged as above)."""
        if self.best_state is None:
            self.best_epoch = epochs_run
            self.best_state = self._weights(model)
        model.load_state_dict(self.best_state)
        return self.best_epoch
