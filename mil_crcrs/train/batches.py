"""Batches of bags: shuffled and padded for training, grouped by length for prediction.

- :func:`iterate_batches` shuffles patients and pads them into batches of at least
  ``batch_size`` bags (the remainder is spread over the batches rather than left as a tiny last
  batch: a Cox loss over a handful of bags is nearly degenerate);
- :func:`eval_batches` groups bags of similar length (:func:`eval_groups`) and pads every tile.

Bags that gather their own batches (device-resident, :mod:`mil_crcrs.data.packed`) or read
ahead (streamed, :mod:`mil_crcrs.data.cache`) are asked to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from mil_crcrs.data.bags import PaddedBatch, PatientBag, collate

#: A training batch: the padded bags, time (B,) float32 and event (B,) float32.
Batch = tuple[PaddedBatch, torch.Tensor, torch.Tensor]
#: Prediction pads at most this many tiles per batch (batch size x longest bag), so that a
#: cohort of huge bags does not need huge memory; a single bag is never split.
MAX_BATCH_TILES = 1 << 18


def iterate_batches(
    bags: Sequence[PatientBag],
    indices: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    max_tiles: int | None = None,
) -> Iterator[Batch]:
    """Shuffled, padded training batches of at least ``batch_size`` bags.

    Parameters
    ----------
    bags : all of the cohort's bags
    indices : (n,) positions of the bags to use
    time, event : (n_bags,) outcome of every bag in ``bags``
    batch_size : the smallest batch (with fewer bags than that, one batch of all of them)
    rng : generator for the shuffle and for tile subsampling
    max_tiles : cap on tiles per bag (random subset), or None for all tiles

    Yields
    ------
    (PaddedBatch, time (B,) float32, event (B,) float32)
    """
    order = rng.permutation(np.asarray(indices))
    if hasattr(
        bags, "train_batches"
    ):  # device-resident bags (mil_crcrs.data.packed) gather their own
        yield from bags.train_batches(order, time, event, batch_size, rng, max_tiles)
        return
    if hasattr(bags, "prefetch"):  # streamed bags (mil_crcrs.data.cache) read ahead in order
        bags.prefetch(order)
    n_batches = max(1, len(order) // batch_size)
    for chunk in np.array_split(order, n_batches):
        batch = collate([bags[i] for i in chunk], max_tiles=max_tiles, rng=rng)
        yield (
            batch,
            torch.as_tensor(time[chunk], dtype=torch.float32),
            torch.as_tensor(event[chunk], dtype=torch.float32),
        )


def eval_groups(
    lengths: np.ndarray, batch_size: int, max_batch_tiles: int = MAX_BATCH_TILES
) -> Iterator[np.ndarray]:
    """Positions of bags of ``lengths`` tiles grouped for prediction, similar lengths together:
    at most ``batch_size`` bags and, unless a bag alone is longer, ``max_batch_tiles`` padded
    tiles per group."""
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1
        while (
            stop < len(order)
            and stop - start < batch_size
            and (stop - start + 1) * lengths[order[stop]] <= max_batch_tiles
        ):
            stop += 1
        yield order[start:stop]
        start = stop


def eval_batches(
    bags: Sequence[PatientBag], batch_size: int, max_batch_tiles: int = MAX_BATCH_TILES
) -> Iterator[tuple[np.ndarray, PaddedBatch]]:
    """Batches for prediction: every tile, bags of similar length together.

    Yields ``(positions, PaddedBatch)``; at most ``batch_size`` bags and, unless a bag alone is
    longer, at most ``max_batch_tiles`` padded tiles per batch (see :func:`eval_groups`).
    """
    lengths = getattr(bags, "n_tiles", None)  # known without reading, for cached/packed bags
    if lengths is None:
        lengths = np.array([bag.n_tiles for bag in bags])
    groups = list(eval_groups(np.asarray(lengths), batch_size, max_batch_tiles))
    if hasattr(bags, "eval_batches"):  # device-resident bags gather their own
        yield from bags.eval_batches(groups)
        return
    if hasattr(bags, "prefetch") and groups:  # streamed bags are read ahead in this order
        bags.prefetch(np.concatenate(groups))
    for chunk in groups:
        yield chunk, collate([bags[i] for i in chunk])
