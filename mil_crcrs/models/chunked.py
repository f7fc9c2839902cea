"""Memory-bounded forward pass for huge bags: the per-tile layers in chunks, recomputed in backward.

A training step on a bag of ``M`` tiles normally keeps every per-tile activation of the instance
MLP (and of the attention branch) for the backward pass: several ``(M, hidden)`` tensors, which
grow with the bag (a 200,000-tile bag costs gigabytes). Above
:attr:`~mil_crcrs.models._base.MILModel.max_step_tiles` real tiles, :meth:`MILModel.forward`
hands the batch to :func:`forward_chunked`, which runs the per-tile layers on chunks of
:attr:`~mil_crcrs.models._base.MILModel.tile_chunk` tiles under
:func:`torch.utils.checkpoint.checkpoint`, so a chunk's activations are dropped after its forward
pass and recomputed in the backward pass (one extra forward pass of the per-tile layers).

- Attention pooling (abmil, a model with a ``_scores`` method) is computed as a streaming
  softmax, as in FlashAttention: each chunk returns only its scores ``(m,)``, and per bag the
  chunk's score maximum, the sum of ``exp(score - max)`` and the ``exp``-weighted sum of its tile
  embeddings ``(B, H)``; the chunks are combined exactly. Nothing of size ``(M, hidden)`` is
  kept, so the step's memory is one chunk's activations plus ``O(M)`` scalars.
- Any other model keeps its chunked tile embeddings ``(M, hidden)`` (but none of the
  intermediate activations) and pools them as usual.

The result equals the unchunked forward pass up to floating-point rounding (tested in float64:
risk, attention and gradients). Dropout masks are the same on recomputation (checkpointing
restores the random state), but they are drawn chunk by chunk, so in training mode they are
different draws from those of the unchunked pass.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mil_crcrs.models.masked import masked_softmax, unpack


class MILModel(Protocol):
    """What the chunked pass uses of a :class:`~mil_crcrs.models.MILModel` (every one is one;
    one with a ``_scores(h) -> (M,)`` method pools by attention, streamed)."""

    tile_chunk: int

    def forward_features(self, features: Tensor) -> Tensor: ...

    def pool(self, h: Tensor, mask: Tensor, grid: Tensor | None) -> tuple[Tensor, Tensor]: ...

    def pool_packed(
        self, h_real: Tensor, rows: Tensor, mask: Tensor, grid: Tensor | None
    ) -> tuple[Tensor, Tensor]: ...


#: Steps with more real tiles than this run chunked (about 0.5-1 GB of activations unchunked
#: at hidden_dim 256).
MAX_STEP_TILES = 1 << 17
#: Tiles per chunk of the chunked pass.
TILE_CHUNK = 1 << 14
#: On a CUDA device the budget grows with the device: ``max_step_tiles`` per this many bytes.
GPU_BYTES_PER_BUDGET = 8 << 30


def step_budget(max_step_tiles: int | None, device: torch.device) -> int | None:
    """The most real tiles a step runs unchunked on ``device``: ``max_step_tiles`` on the CPU,
    times the device's memory in units of :data:`GPU_BYTES_PER_BUDGET` on CUDA."""
    if max_step_tiles is None or device.type != "cuda":
        return max_step_tiles
    total = torch.cuda.get_device_properties(device).total_memory
    return max_step_tiles * max(1, total // GPU_BYTES_PER_BUDGET)


def _maybe_checkpoint(fn, *args: Tensor):
    """``fn(*args)``, under activation checkpointing where autograd records the graph."""
    if torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def _row_chunks(n_real: int, rows: Tensor | None, chunk: int, device: torch.device):
    """Flat row indices of the real tiles, ``chunk`` at a time."""
    for start in range(0, n_real, chunk):
        stop = min(start + chunk, n_real)
        yield rows[start:stop] if rows is not None else torch.arange(start, stop, device=device)


def forward_chunked(
    model: MILModel, features: Tensor, mask: Tensor, rows: Tensor | None, grid: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Bag embeddings ``(B, H')`` and attention ``(B, N)`` with the per-tile work in chunks.

    Parameters
    ----------
    model : the MIL model
    features : (B, N, in_dim) padded batch, already checked by ``model._prepare``
    mask : (B, N) bool, True for a real tile
    rows : (M,) flat indices of the real tiles, or None when no tile is padding
    grid : (B, N, 2) tile-grid positions, or None
    """
    flat = features.flatten(0, 1)
    n_real = flat.shape[0] if rows is None else rows.numel()
    chunks = _row_chunks(n_real, rows, max(1, int(model.tile_chunk)), flat.device)
    if hasattr(model, "_scores"):
        return _attention_pool_chunked(model, flat, chunks, rows, mask)

    def embed(r: Tensor) -> Tensor:
        return model.forward_features(flat[r])

    h_real = torch.cat([_maybe_checkpoint(embed, r) for r in chunks])
    if rows is None:
        return model.pool(h_real.unflatten(0, mask.shape), mask, grid)
    return model.pool_packed(h_real, rows, mask, grid)


def _attention_pool_chunked(
    model: MILModel, flat: Tensor, chunks, rows: Tensor | None, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Streaming-softmax attention pooling ``z_b = sum_i softmax(s)_i h_i`` over row chunks."""
    n_bags, n_tiles = mask.shape

    def chunk_stats(r: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h = model.forward_features(flat[r])
        s = model._scores(h)
        bag = torch.div(r, n_tiles, rounding_mode="floor")
        # The per-bag maximum only stabilises exp(); the result does not depend on it.
        peak = torch.full((n_bags,), -torch.inf, dtype=s.dtype, device=s.device)
        peak = peak.scatter_reduce(0, bag, s.detach(), reduce="amax")
        e = torch.exp(s - peak[bag])
        total = s.new_zeros(n_bags).index_add(0, bag, e)
        weighted = h.new_zeros((n_bags, h.shape[1])).index_add(0, bag, e[:, None] * h)
        return s, peak, total, weighted

    scores, peaks, totals, sums = zip(
        *(_maybe_checkpoint(chunk_stats, r) for r in chunks), strict=True
    )
    peaks_t = torch.stack(peaks)  # (C, B); -inf where a chunk has none of a bag's tiles
    top = peaks_t.max(0).values
    scale = torch.exp(peaks_t - top).nan_to_num(0.0)  # (C, B)
    total = (scale * torch.stack(totals)).sum(0)
    z = (scale[..., None] * torch.stack(sums)).sum(0) / total.clamp_min(1e-30)[:, None]
    s_all = torch.cat(scores)
    padded = s_all.reshape(mask.shape) if rows is None else unpack(s_all, rows, mask.shape)
    return z, masked_softmax(padded, mask)
