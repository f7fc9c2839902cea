"""Tensor helpers for padded batches of bags: ``mask`` (B, N) is True for a real tile.

A padded batch holds ``B`` bags of up to ``N`` tiles; :func:`real_rows` finds the real tiles as
flat indices into ``(B * N)``, :func:`unpack` puts per-tile rows back in the padded layout, and
:func:`masked_softmax` normalises over the real tiles only.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over the entries where ``mask`` is True, exactly 0 elsewhere.

    Parameters
    ----------
    scores : float tensor
    mask : bool tensor broadcastable to ``scores``
    dim : the dimension to normalise over

    Returns
    -------
    Tensor shaped like ``scores``; a slice with no True entry is all zeros (never NaN).
    """
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask


def real_rows(mask: Tensor) -> Tensor | None:
    """Flat indices ``(M,)`` of the real tiles of a padded batch, or None if no tile is padding.

    Indices are into the batch flattened to ``(B * N)``, in order. Finding them syncs the device
    once (``M`` decides a shape).
    """
    rows = mask.reshape(-1).nonzero().squeeze(1)
    return None if rows.numel() == mask.numel() else rows


def unpack(x: Tensor, rows: Tensor, batch_shape: torch.Size) -> Tensor:
    """Rows ``x (M, ...)`` of the real tiles back in the padded layout ``(B, N, ...)``, 0 on padding.

    ``rows`` are the flat indices from :func:`real_rows`; ``batch_shape`` is ``(B, N)``.
    """
    padded = x.new_zeros((batch_shape.numel(), *x.shape[1:])).index_copy(0, rows, x)
    return padded.unflatten(0, batch_shape)


def ceil_div(a: Tensor, b: int | Tensor) -> Tensor:
    """Integer ceil(a / b) for non-negative integer tensors."""
    return torch.div(a + b - 1, b, rounding_mode="floor")
