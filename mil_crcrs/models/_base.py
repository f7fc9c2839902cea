"""What every MIL aggregator shares: its output and its anatomy (masked-tensor helpers: :mod:`mil_crcrs.models.masked`).

A model reads a padded batch of bags and returns one risk per bag::

    h = model.forward_features(features)          # (B, N, H)  instance transform, per tile
    z, attention = model.pool(h, mask, grid)       # (B, H'), (B, N)  bag embedding, tile weights
    logits = model.forward_head(z)                 # (B, n_outputs)  one linear layer

``mask`` is True for a real tile; padding rows never change a bag's result. When a batch has
padding, :meth:`MILModel.forward` computes nothing on it in the per-tile layers: it runs
``forward_features`` on the real tiles only, packed as ``(M, D)``, and hands them to
:meth:`MILModel.pool_packed`, which by default scatters them into the padded layout (zeros on
padding) for ``pool``. Risk is on the log-hazard scale, higher = worse (see
:func:`risk_from_logits`).
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mil_crcrs.errors import InputError
from mil_crcrs.models.chunked import MAX_STEP_TILES, TILE_CHUNK, forward_chunked, step_budget
from mil_crcrs.models.masked import real_rows, unpack


class MILOutput(NamedTuple):
    """What a model returns for a batch of ``B`` bags padded to ``N`` tiles.

    Attributes
    ----------
    risk : (B,) float, log-hazard-scale risk, higher = worse
    logits : (B, n_outputs) float, the raw head output
    attention : (B, N) float, each tile's weight in the bag embedding; every row sums to 1 over
        the real tiles and is exactly 0 on padding
    """

    risk: Tensor
    logits: Tensor
    attention: Tensor


def risk_from_logits(logits: Tensor) -> Tensor:
    """Bag risk (log-hazard scale, higher = worse) from head logits ``(B, K)``.

    One output (a Cox model) is the risk itself. ``K > 1`` outputs are discrete-time hazard
    logits (hazard ``h_k = sigmoid(logit_k)``); the risk is then the log cumulative hazard at
    the last bin, ``log(sum_k -log(1 - h_k)) = log(sum_k softplus(logit_k))``.
    """
    if logits.shape[-1] == 1:
        return logits[..., 0]
    # log(softplus(x)) without underflow: softplus(x) ~ exp(x) for very negative x.
    clamped = logits.clamp_min(-20.0)
    log_sp = torch.where(logits < -20.0, logits, torch.log(F.softplus(clamped)))
    return torch.logsumexp(log_sp, dim=-1)


def _risk_slope(logits: Tensor) -> Tensor:
    """d risk / d logits ``(B, K)``: what :meth:`MILModel.tile_contributions` weights logits by."""
    if logits.shape[-1] == 1:
        return torch.ones_like(logits)
    return torch.sigmoid(logits) / F.softplus(logits).sum(-1, keepdim=True)


def instance_mlp(in_dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    """The per-tile transform shared by the aggregators: linear, ReLU, dropout."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))


def check_hparams(**values: float) -> None:
    """Raise :class:`InputError` unless sizes are positive integers and ``dropout`` is in [0, 1)."""
    for key, value in values.items():
        if key == "dropout":
            if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise InputError(f"model option dropout={value!r}: must be in [0, 1)")
        elif isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(f"model option {key}={value!r}: must be a positive integer")


class MILModel(nn.Module):
    """Base class of the aggregators: instance transform -> pooling -> linear head.

    Subclasses set ``self.head`` (an ``nn.Linear`` to ``n_outputs``) and implement
    :meth:`forward_features`, :meth:`pool` and :meth:`_tile_logits`. Registered subclasses get
    ``model_name`` from :func:`~mil_crcrs.models.register_model`.

    Parameters
    ----------
    in_dim : feature dimension of the tiles
    n_outputs : 1 for a Cox risk, K for K discrete-time hazard logits
    dropout : dropout probability used inside the model
    **hparams : the subclass's own hyperparameters, recorded for :attr:`config`
    """

    model_name: ClassVar[str] = ""
    head: nn.Linear
    #: A batch with more real tiles than this runs its per-tile layers in chunks of
    #: ``tile_chunk`` tiles, recomputed in backward (:mod:`mil_crcrs.models.chunked`), so that
    #: a huge bag's step does not grow with the bag; None = never. On a CUDA device the
    #: budget scales with the device's memory (:func:`~mil_crcrs.models.chunked.step_budget`).
    max_step_tiles: int | None = MAX_STEP_TILES
    tile_chunk: int = TILE_CHUNK
    #: Run training-mode forward passes under ``torch.autocast`` in this dtype (e.g.
    #: ``torch.bfloat16``); None = full precision. Evaluation is always full precision.
    autocast_dtype: torch.dtype | None = None

    def __init__(self, in_dim: int, n_outputs: int = 1, dropout: float = 0.25, **hparams: Any):
        super().__init__()
        check_hparams(in_dim=in_dim, n_outputs=n_outputs, dropout=dropout)
        self.in_dim = in_dim
        self.n_outputs = n_outputs
        self.dropout = float(dropout)
        self._hparams = {"in_dim": in_dim, "n_outputs": n_outputs, "dropout": dropout, **hparams}
        # Optional per-dimension input standardisation, applied by _prepare on every path
        # (a mil_crcrs.train.standardize.FeatureNorm set by fit; None = features as they are).
        self.register_module("input_norm", None)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments including ``name``: ``create_model(**model.config)`` rebuilds it."""
        return {"name": self.model_name, **self._hparams}

    # -- anatomy ---------------------------------------------------------------------------------
    def forward_features(self, features: Tensor) -> Tensor:
        """Per-tile transform: ``(..., in_dim) -> (..., H)``, each tile on its own.

        :meth:`forward` calls it on ``(B, N, in_dim)`` or, when the batch has padding, on the
        real tiles only, packed as ``(M, in_dim)``.
        """
        raise NotImplementedError

    def pool(self, h: Tensor, mask: Tensor, grid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Bag embedding ``(B, H')`` and tile attention ``(B, N)`` from tile embeddings ``h``."""
        raise NotImplementedError

    def pool_packed(
        self, h_real: Tensor, rows: Tensor, mask: Tensor, grid: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`pool` from the embeddings of the real tiles only.

        Parameters
        ----------
        h_real : (M, H) embeddings of the real tiles, in the order of ``rows``
        rows : (M,) long flat indices of the real tiles in ``(B * N)`` (see :func:`real_rows`)
        mask : (B, N) bool, True for a real tile
        grid : (B, N, 2) long tile-grid positions, or None

        The default scatters ``h_real`` into the padded layout (zeros on padding) and calls
        :meth:`pool`; a model whose pooling computes per tile (abmil's attention scores)
        overrides it to leave the padding out of that too.
        """
        return self.pool(unpack(h_real, rows, mask.shape), mask, grid)

    def forward_head(self, z: Tensor) -> Tensor:
        """Logits ``(B, n_outputs)`` from bag embeddings ``z`` (a linear layer)."""
        return self.head(z)

    def forward(
        self, features: Tensor, mask: Tensor | None = None, grid: Tensor | None = None
    ) -> MILOutput:
        """Risk, logits and attention of a padded batch.

        Parameters
        ----------
        features : (B, N, in_dim) float; rows where ``mask`` is False are ignored
        mask : (B, N) bool, True for a real tile; None means every tile is real
        grid : (B, N, 2) long tile-grid positions (col, row), used by models with a spatial
            block (transmil); None where unknown

        Returns
        -------
        MILOutput
        """
        amp = self.autocast_dtype is not None and self.training
        with torch.autocast(features.device.type, dtype=self.autocast_dtype, enabled=amp):
            features, mask, rows = self._prepare(features, mask, grid)
            n_real = features.shape[0] * features.shape[1] if rows is None else rows.numel()
            budget = step_budget(self.max_step_tiles, features.device)
            if budget is not None and n_real > budget:
                z, attention = forward_chunked(self, features, mask, rows, grid)
            elif rows is None:  # no padding
                z, attention = self.pool(self.forward_features(features), mask, grid)
            else:  # the per-tile work on the real tiles only
                h_real = self.forward_features(features.flatten(0, 1)[rows])
                z, attention = self.pool_packed(h_real, rows, mask, grid)
            logits = self.forward_head(z)
        logits = logits.float() if amp else logits
        return MILOutput(risk_from_logits(logits), logits, attention.to(logits.dtype))

    def tile_contributions(
        self, features: Tensor, mask: Tensor | None = None, grid: Tensor | None = None
    ) -> Tensor:
        """Each tile's additive share of the risk, ``(B, N)``, 0 on padding.

        With ``n_outputs=1`` and the model in eval mode, the shares plus ``head.bias`` sum to the
        risk. For ``n_outputs > 1`` the shares are of the logits, weighted by the slope of the risk
        in the logits at this bag (a first-order approximation). How each model splits its bag
        embedding over tiles is documented on the model's ``_tile_logits``.
        """
        features, mask, rows = self._prepare(features, mask, grid)
        per_tile, logits = self._tile_logits(self._embed(features, mask, rows), mask, grid)
        slope = _risk_slope(logits.detach())
        return (per_tile * slope[:, None, :]).sum(-1) * mask

    def _tile_logits(self, h: Tensor, mask: Tensor, grid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-tile logit shares ``(B, N, K)`` summing to ``logits - head.bias``, and the logits,
        from the tile embeddings ``h (B, N, H)`` (0 on padding)."""
        raise NotImplementedError

    def _embed(self, features: Tensor, mask: Tensor, rows: Tensor | None) -> Tensor:
        """:meth:`forward_features` on the real tiles only, in the padded layout (0 on padding)."""
        if rows is None:
            return self.forward_features(features)
        return unpack(self.forward_features(features.flatten(0, 1)[rows]), rows, mask.shape)

    def _prepare(
        self, features: Tensor, mask: Tensor | None, grid: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Checked inputs: features in the model's dtype, the mask (all True if None) and the
        flat indices of the real tiles (None if there is no padding, see :func:`real_rows`)."""
        if features.ndim != 3 or features.shape[-1] != self.in_dim:
            raise ValueError(
                f"{self.model_name}: features must be (batch, tiles, {self.in_dim}), "
                f"got {tuple(features.shape)}"
            )
        batch, n_tiles, _ = features.shape
        if mask is not None and mask.shape != (batch, n_tiles):
            raise ValueError(f"mask must be ({batch}, {n_tiles}), got {tuple(mask.shape)}")
        if grid is not None and grid.shape != (batch, n_tiles, 2):
            raise ValueError(f"grid must be ({batch}, {n_tiles}, 2), got {tuple(grid.shape)}")
        weight = self.head.weight
        if features.dtype != weight.dtype and not torch.is_autocast_enabled(features.device.type):
            features = features.to(weight.dtype)
        if self.input_norm is not None:
            features = self.input_norm(features)
        if mask is None:
            mask = torch.ones((batch, n_tiles), dtype=torch.bool, device=features.device)
            return features, mask, None
        mask = mask.bool()
        return features, mask, real_rows(mask)
