"""Pooling baselines: the same instance MLP and linear head as abmil, with mean or max pooling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mil_crcrs.models._base import MILModel, check_hparams, instance_mlp
from mil_crcrs.models._registry import register_model


class _PoolingMIL(MILModel):
    def __init__(
        self, in_dim: int, n_outputs: int = 1, hidden_dim: int = 256, dropout: float = 0.25
    ) -> None:
        check_hparams(hidden_dim=hidden_dim)
        super().__init__(in_dim, n_outputs, dropout, hidden_dim=hidden_dim)
        self.mlp = instance_mlp(in_dim, hidden_dim, dropout)
        self.head = nn.Linear(hidden_dim, n_outputs)

    def forward_features(self, features: Tensor) -> Tensor:
        return self.mlp(features)

    def _tile_logits(self, h: Tensor, mask: Tensor, grid: Tensor | None) -> tuple[Tensor, Tensor]:
        shares = self._channel_shares(h, mask)  # (B, N, H) or (B, N, 1)
        per_tile = (shares * h) @ self.head.weight.T
        return per_tile, per_tile.sum(1) + self.head.bias

    def _channel_shares(self, h: Tensor, mask: Tensor) -> Tensor:
        """Weights ``s_bic`` such that the pooled embedding is ``z_bc = sum_i s_bic h_bic``."""
        raise NotImplementedError


@register_model("mean")
class MeanMIL(_PoolingMIL):
    """Mean of the tile embeddings over the bag's real tiles; attention is 1/n on every tile.

    The risk decomposes exactly: tile ``i`` contributes ``head(h_i) / n`` (without bias).

    Parameters
    ----------
    in_dim : feature dimension of the tiles
    n_outputs : 1 (Cox risk) or K discrete-time hazard logits
    hidden_dim : width of the instance MLP
    dropout : dropout after the instance MLP
    """

    def pool(self, h: Tensor, mask: Tensor, grid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        attention = self._channel_shares(h, mask)[..., 0]
        return torch.einsum("bn,bnh->bh", attention, h), attention

    def _channel_shares(self, h: Tensor, mask: Tensor) -> Tensor:
        weights = mask.to(h.dtype)
        weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
        return weights[..., None]


@register_model("max")
class MaxMIL(_PoolingMIL):
    """Channel-wise max of the tile embeddings over the bag's real tiles.

    A tile's attention is the share of hidden channels whose maximum it holds (a channel whose
    maximum several tiles share counts for each of them by an equal fraction), so attention
    does not depend on tile order. The risk decomposes exactly over tiles the same way: tile
    ``i`` contributes ``sum_c w_c h_ic`` over the channels it holds (without bias).

    Parameters
    ----------
    in_dim : feature dimension of the tiles
    n_outputs : 1 (Cox risk) or K discrete-time hazard logits
    hidden_dim : width of the instance MLP
    dropout : dropout after the instance MLP
    """

    def pool(self, h: Tensor, mask: Tensor, grid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = self._masked_max(h, mask)
        with torch.no_grad():
            attention = self._shares(h, mask, z).mean(-1)
        return z, attention

    @staticmethod
    def _masked_max(h: Tensor, mask: Tensor) -> Tensor:
        z = h.masked_fill(~mask[..., None], float("-inf")).amax(1)
        return torch.where(mask.any(1, keepdim=True), z, torch.zeros_like(z))

    @staticmethod
    def _shares(h: Tensor, mask: Tensor, z: Tensor) -> Tensor:
        holds = (h == z[:, None, :]) & mask[..., None]
        holds = holds.to(h.dtype)
        return holds / holds.sum(1, keepdim=True).clamp_min(1.0)

    def _channel_shares(self, h: Tensor, mask: Tensor) -> Tensor:
        return self._shares(h.detach(), mask, self._masked_max(h.detach(), mask))
