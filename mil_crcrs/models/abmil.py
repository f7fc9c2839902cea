"""Gated attention MIL (Ilse, Tomczak and Welling, ICML 2018), the default aggregator."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mil_crcrs.models._base import MILModel, check_hparams, instance_mlp
from mil_crcrs.models._registry import register_model
from mil_crcrs.models.masked import masked_softmax, unpack


@register_model("abmil")
class ABMIL(MILModel):
    """Instance MLP, gated attention pooling, linear risk head.

    Tile ``i`` with embedding ``h_i`` scores ``s_i = w^T (tanh(V h_i) * sigmoid(U h_i))``; the
    attention is the softmax of the scores over the bag's real tiles and the bag embedding is
    ``z = sum_i a_i h_i``. As the head is linear, the risk is exactly
    ``sum_i a_i head(h_i)`` (without bias) plus the head bias.

    Parameters
    ----------
    in_dim : feature dimension of the tiles
    n_outputs : 1 (Cox risk) or K discrete-time hazard logits
    hidden_dim : width of the instance MLP
    attn_dim : width of the gated attention branch
    dropout : dropout after the instance MLP and inside the attention branch
    """

    def __init__(
        self,
        in_dim: int,
        n_outputs: int = 1,
        hidden_dim: int = 256,
        attn_dim: int = 128,
        dropout: float = 0.25,
    ) -> None:
        check_hparams(hidden_dim=hidden_dim, attn_dim=attn_dim)
        super().__init__(in_dim, n_outputs, dropout, hidden_dim=hidden_dim, attn_dim=attn_dim)
        self.mlp = instance_mlp(in_dim, hidden_dim, dropout)
        # V and U of the paper in one matrix: one matmul instead of two.
        self.attention_vu = nn.Linear(hidden_dim, 2 * attn_dim)
        self.attention_dropout = nn.Dropout(dropout)
        self.attention_w = nn.Linear(attn_dim, 1)
        self.head = nn.Linear(hidden_dim, n_outputs)

    def forward_features(self, features: Tensor) -> Tensor:
        return self.mlp(features)

    def pool(self, h: Tensor, mask: Tensor, grid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        attention = masked_softmax(self._scores(h), mask)
        return torch.einsum("bn,bnh->bh", attention, h), attention

    def pool_packed(
        self, h_real: Tensor, rows: Tensor, mask: Tensor, grid: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        # The gated attention layers on the real tiles only; the softmax and the weighted sum
        # (cheap, and simplest in the padded layout) over the padded batch.
        attention = masked_softmax(unpack(self._scores(h_real), rows, mask.shape), mask)
        h = unpack(h_real, rows, mask.shape)
        return torch.einsum("bn,bnh->bh", attention, h), attention

    def _scores(self, h: Tensor) -> Tensor:
        """Attention scores ``(...)`` of tile embeddings ``h (..., hidden_dim)``, before softmax."""
        v, u = self.attention_vu(h).chunk(2, dim=-1)
        gated = self.attention_dropout(torch.tanh(v) * torch.sigmoid(u))
        return self.attention_w(gated).squeeze(-1)

    def _tile_logits(self, h: Tensor, mask: Tensor, grid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Exact: tile ``i`` contributes ``a_i W h_i``."""
        _, attention = self.pool(h, mask)
        per_tile = attention[..., None] * (h @ self.head.weight.T)
        return per_tile, per_tile.sum(1) + self.head.bias
