"""TransMIL (Shao et al., NeurIPS 2021): a small transformer over the tiles of a bag.

Layout, following the paper: linear projection -> class token -> Nystrom self-attention layer ->
PPEG (depthwise 7x7, 5x5 and 3x3 convolutions on the 2-D tile grid) -> second attention layer ->
LayerNorm -> linear head on the class token.

Choices made here, each so that padding and the other bags of a batch never change a bag's result:

- Nystrom attention (Xiong et al., AAAI 2021) takes its landmarks as means of consecutive segments
  of each bag's own real tokens (``ceil(n / n_landmarks)`` tokens a segment): a bag of up to
  ``n_landmarks`` tokens uses every token as a landmark (exact softmax attention once the
  pseudo-inverse has converged), and a bag of any size costs O(n * n_landmarks). The
  Moore-Penrose pseudo-inverse is the paper's iteration, scaled per bag.
- Tokens are ordered by grid position (row-major) before they are cut into segments, so with
  ``grid`` given (and one tile per grid cell) the model does not depend on the order of tiles.
  Without ``grid``, tiles keep their input order and are laid out in a square for the PPEG.
- The second layer only has to produce the class token, so it computes that one query row
  exactly (O(n)); its softmax row, averaged over heads, is the attention the model reports.
- The PPEG convolves a canvas holding each tile at its grid cell. A bag whose grid would need a
  canvas of more than ``8 n + 1024`` cells (sparse or non-lattice positions) is laid out in a
  square instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mil_crcrs.errors import InputError
from mil_crcrs.models._base import MILModel, check_hparams, instance_mlp
from mil_crcrs.models._registry import register_model
from mil_crcrs.models.masked import ceil_div, masked_softmax

_CANVAS_CELLS_PER_TILE = 8
_CANVAS_SLACK = 1024


def iterative_pinv(a: Tensor, n_iter: int) -> Tensor:
    """Moore-Penrose pseudo-inverse of square matrices ``(..., m, m)`` by iteration.

    The iteration of the Nystromformer paper, ``Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4``
    started from ``A^T / (max row sum * max column sum)``, scaled per matrix.
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    abs_a = a.abs()
    scale = abs_a.sum(-1).amax(-1) * abs_a.sum(-2).amax(-1)
    z = a.transpose(-1, -2) / scale[..., None, None]
    for _ in range(n_iter):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


class NystromAttention(nn.Module):
    """Multi-head self-attention approximated with landmarks, mask-aware.

    Parameters
    ----------
    dim : token width (a multiple of ``heads``)
    heads : number of heads
    n_landmarks : number of landmarks per bag
    pinv_iterations : iterations of :func:`iterative_pinv`
    dropout : dropout on the output
    """

    def __init__(
        self, dim: int, heads: int, n_landmarks: int, pinv_iterations: int, dropout: float
    ) -> None:
        super().__init__()
        self.heads = heads
        self.n_landmarks = n_landmarks
        self.pinv_iterations = pinv_iterations
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.out_dropout = nn.Dropout(dropout)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, n, width = x.shape
        return x.view(batch, n, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor, rank: Tensor) -> Tensor:
        """Attention output ``(B, N, dim)`` for tokens ``x (B, N, dim)``.

        ``mask (B, N)`` marks real tokens; ``rank (B, N)`` is each real token's position
        ``0..n-1`` in its bag's sequence, which decides the landmark segments.
        """
        batch, n, width = x.shape
        q, k, v = (self._split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))
        q = q * (width // self.heads) ** -0.5
        m = self.n_landmarks
        # Landmarks: means of segments of ceil(n_real / m) consecutive real tokens.
        seg_len = ceil_div(mask.sum(1), m).clamp_min(1)
        segment = torch.div(rank, seg_len[:, None], rounding_mode="floor")
        landmarks = torch.arange(m, device=x.device)
        member = (segment[:, None, :] == landmarks[None, :, None]) & mask[:, None, :]
        counts = member.sum(-1)  # (B, m)
        has_lm = counts > 0
        means = member.to(q.dtype) / counts.clamp_min(1)[..., None].to(q.dtype)
        q_lm = means[:, None] @ q  # (B, h, m, d)
        k_lm = means[:, None] @ k
        lm_cols = has_lm[:, None, None, :]
        kernel_1 = masked_softmax(q @ k_lm.transpose(-1, -2), lm_cols)  # (B, h, N, m)
        kernel_2 = masked_softmax(q_lm @ k_lm.transpose(-1, -2), lm_cols)  # (B, h, m, m)
        # Empty landmark slots become identity rows: the pseudo-inverse is then block-diagonal
        # and the real block is exactly that of a bag with only its real landmarks.
        eye = torch.eye(m, dtype=q.dtype, device=x.device)
        kernel_2 = torch.where(has_lm[:, None, :, None], kernel_2, eye)
        kernel_3 = masked_softmax(q_lm @ k.transpose(-1, -2), mask[:, None, None, :])
        kernel_3 = kernel_3 * has_lm[:, None, :, None]  # (B, h, m, N)
        out = kernel_1 @ (iterative_pinv(kernel_2, self.pinv_iterations) @ (kernel_3 @ v))
        out = out.transpose(1, 2).reshape(batch, n, width)
        return self.out_dropout(self.out(out))

    def class_token_attention(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Exact softmax attention of the first token's query over all tokens.

        Returns
        -------
        attention : (B, heads, N) softmax rows, 0 where ``mask`` is False
        values : (B, heads, N, dim // heads)
        """
        width = x.shape[-1]
        w_q, w_kv = self.qkv.weight.split([width, 2 * width])
        q = F.linear(x[:, :1], w_q)
        k, v = (self._split_heads(t) for t in F.linear(x, w_kv).chunk(2, dim=-1))
        q = self._split_heads(q) * (width // self.heads) ** -0.5  # (B, h, 1, d)
        scores = (q @ k.transpose(-1, -2)).squeeze(-2)  # (B, h, N)
        return masked_softmax(scores, mask[:, None, :]), v

    def class_token_forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Attention output of the first token ``(B, dim)`` and its attention ``(B, heads, N)``."""
        attention, v = self.class_token_attention(x, mask)
        out = (attention[..., None] * v).sum(-2).flatten(1)  # (B, h * d)
        return self.out_dropout(self.out(out)), attention


class PPEG(nn.Module):
    """Pyramid position encoding generator: depthwise 7x7, 5x5 and 3x3 convolutions plus identity
    on a canvas that holds every tile token at its grid cell."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3)
        )

    def forward(self, x: Tensor, mask: Tensor, cells: Tensor) -> Tensor:
        """``x (B, N, dim)`` tile tokens, ``cells (B, N, 2)`` long (col, row) -> ``(B, N, dim)``."""
        batch, n, width = x.shape
        cols, rows = cells[..., 0], cells[..., 1]
        n_cols = int(cols.masked_fill(~mask, 0).max()) + 1 if n else 1
        n_rows = int(rows.masked_fill(~mask, 0).max()) + 1 if n else 1
        offset = torch.arange(batch, device=x.device)[:, None] * (n_rows * n_cols)
        flat = (offset + rows * n_cols + cols).masked_fill(~mask, 0).reshape(-1)
        tokens = x.masked_fill(~mask[..., None], 0.0).reshape(-1, width)
        canvas = x.new_zeros(batch * n_rows * n_cols, width).index_put(
            (flat,), tokens, accumulate=True
        )
        canvas = canvas.view(batch, n_rows, n_cols, width).permute(0, 3, 1, 2)
        mixed = sum(conv(canvas) for conv in self.convs)
        mixed = mixed.permute(0, 2, 3, 1).reshape(-1, width)[flat].view(batch, n, width)
        return x + mixed.masked_fill(~mask[..., None], 0.0)


def _inverse_permutation(order: Tensor) -> Tensor:
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def tile_layout(mask: Tensor, grid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Canvas cells of the tiles and their sequence ranks.

    Parameters
    ----------
    mask : (B, N) bool, True for a real tile
    grid : (B, N, 2) long (col, row) tile-grid positions, or None

    Returns
    -------
    cells : (B, N, 2) long (col, row) canvas cells, origin at 0 per bag (0 on padding)
    rank : (B, N) long position of each real tile in its bag's sequence, ``0..n-1``; tiles on a
        grid are ordered row-major, ties and tiles without a grid in input order; padding
        ranks come after the real ones
    """
    batch, n = mask.shape
    n_real = mask.sum(1)
    input_rank = mask.long().cumsum(1) - 1
    side = torch.ceil(torch.sqrt(n_real.to(torch.float64))).long().clamp_min(1)
    square = torch.stack([input_rank % side[:, None], input_rank // side[:, None]], dim=-1)
    if grid is None:
        use_grid = torch.zeros(batch, dtype=torch.bool, device=mask.device)
        cells = square
    else:
        big = torch.iinfo(torch.long).max
        grid = grid.long()
        origin = grid.masked_fill(~mask[..., None], big).amin(1, keepdim=True)
        shifted = (grid - origin).masked_fill(~mask[..., None], 0)
        extent = shifted.amax(1) + 1  # (B, 2)
        limit = _CANVAS_CELLS_PER_TILE * n_real + _CANVAS_SLACK
        # Each side first, so that the product cannot overflow.
        use_grid = (extent <= limit[:, None]).all(1)
        use_grid &= extent[:, 0] * extent[:, 1].clamp(max=limit) <= limit
        cells = torch.where(use_grid[:, None, None], shifted, square)
    cells = cells.masked_fill(~mask[..., None], 0)
    width = cells[..., 0].amax(1, keepdim=True) + 1
    key = torch.where(
        use_grid[:, None], cells[..., 1] * width + cells[..., 0], input_rank
    ).masked_fill(~mask, torch.iinfo(torch.long).max)
    order = torch.argsort(key, dim=1, stable=True)
    return cells, _inverse_permutation(order)


@register_model("transmil")
class TransMIL(MILModel):
    """TransMIL with Nystrom attention and a PPEG on the tile grid (see the module docstring).

    Parameters
    ----------
    in_dim : feature dimension of the tiles
    n_outputs : 1 (Cox risk) or K discrete-time hazard logits
    dim : token width
    heads : attention heads (``dim`` must be a multiple)
    n_landmarks : Nystrom landmarks per bag; a bag with fewer tokens uses each as a landmark
    pinv_iterations : iterations of the pseudo-inverse
    dropout : dropout after the projection and on the attention outputs
    """

    def __init__(
        self,
        in_dim: int,
        n_outputs: int = 1,
        dim: int = 256,
        heads: int = 8,
        n_landmarks: int = 64,
        pinv_iterations: int = 6,
        dropout: float = 0.25,
    ) -> None:
        check_hparams(dim=dim, heads=heads, n_landmarks=n_landmarks)
        if isinstance(pinv_iterations, bool) or not isinstance(pinv_iterations, int):
            raise InputError(f"model option pinv_iterations={pinv_iterations!r}: must be an int")
        if pinv_iterations < 0:
            raise InputError(f"model option pinv_iterations={pinv_iterations}: must be >= 0")
        if dim % heads:
            raise InputError(f"model option dim={dim}: must be a multiple of heads={heads}")
        super().__init__(
            in_dim,
            n_outputs,
            dropout,
            dim=dim,
            heads=heads,
            n_landmarks=n_landmarks,
            pinv_iterations=pinv_iterations,
        )
        self.projection = instance_mlp(in_dim, dim, dropout)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.norm_1 = nn.LayerNorm(dim)
        self.attention_1 = NystromAttention(dim, heads, n_landmarks, pinv_iterations, dropout)
        self.ppeg = PPEG(dim)
        self.norm_2 = nn.LayerNorm(dim)
        self.attention_2 = NystromAttention(dim, heads, n_landmarks, pinv_iterations, dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_outputs)

    def forward_features(self, features: Tensor) -> Tensor:
        return self.projection(features)

    def _encode(self, h: Tensor, mask: Tensor, grid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Tokens entering the second layer ``(B, 1 + N, dim)`` (class token first) and the mask."""
        batch = h.shape[0]
        h = h.masked_fill(~mask[..., None], 0.0)
        cells, rank = tile_layout(mask, grid)
        one = torch.ones((batch, 1), dtype=torch.bool, device=h.device)
        tmask = torch.cat([one, mask], 1)
        trank = torch.cat([torch.zeros_like(rank[:, :1]), rank + 1], 1)
        x = torch.cat([self.cls_token.expand(batch, -1, -1).to(h.dtype), h], 1)
        x = x + self.attention_1(self.norm_1(x), tmask, trank)
        x = torch.cat([x[:, :1], self.ppeg(x[:, 1:], mask, cells)], 1)
        return x, tmask

    @staticmethod
    def _tile_attention(per_head: Tensor) -> Tensor:
        """Mean over heads of the class token's softmax row, restricted to tiles, summing to 1."""
        tiles = per_head[:, :, 1:].mean(1)
        return tiles / tiles.sum(1, keepdim=True).clamp_min(torch.finfo(tiles.dtype).tiny)

    def pool(self, h: Tensor, mask: Tensor, grid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, tmask = self._encode(h, mask, grid)
        out, per_head = self.attention_2.class_token_forward(self.norm_2(x), tmask)
        z = self.norm(x[:, 0] + out)
        return z, self._tile_attention(per_head)

    def _tile_logits(self, h: Tensor, mask: Tensor, grid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Exact at this bag's LayerNorm scale (a linearisation of the final LayerNorm).

        The class token entering the final LayerNorm is ``c = x_cls + b_out + sum_j t_j``, with
        ``t_j`` token ``j``'s attention-weighted value (class token included). Holding the
        LayerNorm's standard deviation at its value for this bag makes the head affine in ``c``:
        tile ``i`` gets the logit share of its ``t_i``, plus a share of the rest (class token's own
        value, residual, biases) in proportion to its attention. Call in eval mode.
        """
        x, tmask = self._encode(h, mask, grid)
        attn = self.attention_2
        per_head, v = attn.class_token_attention(self.norm_2(x), tmask)
        batch, _, n_tokens, _ = v.shape
        weighted = (per_head[..., None] * v).transpose(1, 2).reshape(batch, n_tokens, -1)
        t = weighted @ attn.out.weight.T  # (B, 1 + N, dim)
        c = x[:, 0] + attn.out.bias + t.sum(1)
        sigma = torch.sqrt(c.var(-1, correction=0) + self.norm.eps)[:, None]
        gamma_w = self.norm.weight[:, None] * self.head.weight.T  # (dim, K)

        def logit_share(y: Tensor) -> Tensor:  # the centred, scaled, linear part of LN + head
            return ((y - y.mean(-1, keepdim=True)) / sigma[..., None]) @ gamma_w

        shares = logit_share(t)  # (B, 1 + N, K)
        rest = shares[:, 0] + logit_share((x[:, 0] + attn.out.bias)[:, None])[:, 0]
        rest = rest + self.norm.bias @ self.head.weight.T
        alpha = self._tile_attention(per_head)
        per_tile = shares[:, 1:] + alpha[..., None] * rest[:, None, :]
        return per_tile, self.forward_head(self.norm(c))
