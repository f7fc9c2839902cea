"""Device-resident training: a cohort's features packed into one tensor on the device.

When a cohort fits in device memory (1,000 patients x 10k tiles x 1,024-d is 20 GB in float16),
copying each batch from the host every step is the slowest part of a GPU fit. :class:`PackedBags`
copies the features to the device once, as one ``(total_tiles, dim)`` float16 tensor (float32
where float16 would blur the features, see :func:`float16_is_enough`) with the bags' offsets, and builds every batch there by indexing: no host-to-device copy per step, no
Python loop over the bags of a batch, and the random tile subset of ``max_tiles`` is drawn on
the device.

:func:`mil_crcrs.train.batches.iterate_batches` and :func:`mil_crcrs.train.batches.eval_batches` hand
over to :meth:`PackedBags.train_batches` and :meth:`PackedBags.eval_batches`, so the training
loop is the same for every kind of bag sequence. The same code runs on the CPU (the packed
tensor is then in host memory), which is how it is tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from mil_crcrs.data.bags import PaddedBatch, PatientBag

_F16_MAX = float(np.finfo(np.float16).max)
#: float16 is used where its rounding is at most this share of each dimension's sd in the bag.
FLOAT16_SD_SHARE = 0.01
#: Share of the device's free memory the packed cohort may take (the rest is for training).
DEVICE_SHARE = 0.6


def packed_nbytes(n_tiles: np.ndarray, dim: int) -> int:
    """Device bytes of :class:`PackedBags` for bags of ``n_tiles`` tiles of ``dim`` features."""
    return int(np.sum(n_tiles)) * (2 * dim + 2 * 4)


def fits_on_device(n_tiles: np.ndarray, dim: int, device: torch.device) -> bool:
    """Whether the packed cohort takes at most :data:`DEVICE_SHARE` of ``device``'s free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return packed_nbytes(n_tiles, dim) <= DEVICE_SHARE * free


class PackedBags(Sequence[PatientBag]):
    """A cohort's bags as one packed tensor on ``device``.

    Parameters
    ----------
    bags : the bags (read once, in order); ``self[i]`` still returns ``bags[i]``
    device : where the packed tensor lives

    Attributes
    ----------
    features : (total_tiles, dim) float16, or float32 if float16 would blur a bag's features
        (see :func:`float16_is_enough`)
    grid : (total_tiles, 2) int32 tile-grid positions
    offsets : (n_bags,) long first row of each bag; ``n_tiles`` the (n_bags,) lengths (host)
    """

    def __init__(
        self,
        bags: Sequence[PatientBag],
        device: torch.device | str,
        n_tiles: np.ndarray | None = None,
    ) -> None:
        self.bags = bags
        self.device = torch.device(device)
        if n_tiles is None:
            n_tiles = np.array([b.n_tiles for b in bags], dtype=np.int64)
        self.n_tiles = np.asarray(n_tiles, dtype=np.int64)
        self.feature_dim = getattr(bags, "feature_dim", None) or bags[0].features.shape[1]
        self.encoder = getattr(bags, "encoder", None)
        starts = np.concatenate([[0], np.cumsum(self.n_tiles)[:-1]]).astype(np.int64)
        total = int(self.n_tiles.sum())
        self.features = torch.empty(
            (total, self.feature_dim), dtype=torch.float16, device=self.device
        )
        self.grid = torch.empty((total, 2), dtype=torch.int32, device=self.device)
        for i, start in enumerate(starts):  # each bag read once per fit, not per step
            bag = bags[i]
            if bag.n_tiles != self.n_tiles[i]:
                raise ValueError(f"bag {i} has {bag.n_tiles} tiles, expected {self.n_tiles[i]}")
            if self.features.dtype == torch.float16 and not float16_is_enough(bag.features):
                self.features = self.features.float()  # float16 would blur this bag
            rows = slice(int(start), int(start) + bag.n_tiles)
            feats = torch.from_numpy(np.ascontiguousarray(bag.features))
            self.features[rows] = feats.to(self.device, self.features.dtype)
            self.grid[rows] = torch.from_numpy(bag.grid.astype(np.int32)).to(self.device)
        self.offsets = torch.as_tensor(starts, dtype=torch.long, device=self.device)
        self.lengths = torch.as_tensor(self.n_tiles, dtype=torch.long, device=self.device)
        self.stats: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.n_tiles)

    def __getitem__(self, index: int) -> PatientBag:  # type: ignore[override]
        return self.bags[int(index)]

    def subset(self, indices: Sequence[int]) -> PackedView:
        """The bags ``indices`` as a view sharing the packed tensor."""
        return PackedView(self, np.asarray(indices, dtype=np.int64))

    # -- batches ---------------------------------------------------------------------------------
    def gather(
        self,
        index: torch.Tensor,
        n_max: int,
        max_tiles: int | None = None,
        generator: torch.Generator | None = None,
    ) -> PaddedBatch:
        """The padded batch of bags ``index`` (B,) long on the device.

        Parameters
        ----------
        index : (B,) positions of the bags
        n_max : the longest of those bags (known on the host, so no device sync)
        max_tiles : a bag with more tiles gets a random subset of this many, in tile order
        generator : the device generator for that subset
        """
        lengths, starts = self.lengths[index], self.offsets[index]
        width = n_max if max_tiles is None else min(n_max, max_tiles)
        cols = torch.arange(width, device=self.device)
        if max_tiles is None or n_max <= max_tiles:
            pos = cols.expand(len(index), width)
        else:  # the `width` smallest random keys among the real tiles = a uniform subset
            keys = torch.rand((len(index), n_max), device=self.device, generator=generator)
            keys = keys.masked_fill(torch.arange(n_max, device=self.device) >= lengths[:, None], 2)
            pos = keys.topk(width, dim=1, largest=False, sorted=False).indices.sort(1).values
        mask = cols < lengths.clamp_max(width)[:, None]
        rows = torch.where(mask, starts[:, None] + pos, 0)
        features = self.features[rows].masked_fill(~mask[..., None], 0)
        grid = self.grid[rows].long().masked_fill(~mask[..., None], 0)
        return PaddedBatch(features=features, mask=mask, grid=grid)

    def train_batches(
        self,
        order: np.ndarray,
        time: np.ndarray,
        event: np.ndarray,
        batch_size: int,
        rng: np.random.Generator,
        max_tiles: int | None = None,
    ) -> Iterator[tuple[PaddedBatch, torch.Tensor, torch.Tensor]]:
        """Batches of the (already shuffled) ``order``, like :func:`~mil_crcrs.train.batches.iterate_batches`.

        The order, times and events go to the device once per epoch; the tile subsets are drawn
        with a device generator seeded from ``rng``.
        """
        generator = None
        if max_tiles is not None:  # without subsampling, rng draws what iterate_batches draws
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(rng.integers(2**62)))
        order_dev = torch.as_tensor(order, dtype=torch.long, device=self.device)
        # copies: the cohort's arrays may be read-only views, which torch warns about
        time_dev = torch.tensor(np.asarray(time, dtype=np.float32), device=self.device)
        event_dev = torch.tensor(np.asarray(event, dtype=np.float32), device=self.device)
        n_batches = max(1, len(order) // batch_size)
        bounds = np.cumsum([0] + [len(c) for c in np.array_split(order, n_batches)])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            index = order_dev[lo:hi]
            n_max = int(self.n_tiles[order[lo:hi]].max())
            batch = self.gather(index, n_max, max_tiles, generator)
            yield batch, time_dev[index], event_dev[index]

    def eval_batches(
        self, groups: Sequence[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, PaddedBatch]]:
        """``(positions, PaddedBatch)`` with every tile of the bags of each group."""
        flat = torch.as_tensor(np.concatenate(groups), dtype=torch.long, device=self.device)
        start = 0
        for group in groups:
            index = flat[start : start + len(group)]
            start += len(group)
            yield group, self.gather(index, int(self.n_tiles[group].max()))


class PackedView(Sequence[PatientBag]):
    """Some of a :class:`PackedBags`' bags, sharing its packed tensor."""

    def __init__(self, packed: PackedBags, indices: np.ndarray) -> None:
        self.packed, self.indices = packed, indices
        self.n_tiles = packed.n_tiles[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> PatientBag:  # type: ignore[override]
        return self.packed[int(self.indices[index])]

    def eval_batches(
        self, groups: Sequence[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, PaddedBatch]]:
        for (_, batch), group in zip(
            self.packed.eval_batches([self.indices[g] for g in groups]), groups, strict=True
        ):
            yield group, batch


def float16_is_enough(features: np.ndarray) -> bool:
    """Whether float16 holds ``features`` (n_tiles, dim) without blurring them.

    True for float16 input, and where every value is in float16's range and, in every
    dimension that varies over the bag, half a float16 step at the dimension's largest value
    is at most :data:`FLOAT16_SD_SHARE` of its sd. Features of a roughly unit scale pass; a
    dimension with a large offset and a small spread (``51.47 +- 0.1``: float16 steps of 0.03)
    does not, and its bag stays float32.
    """
    if features.dtype == np.float16 or features.size == 0:
        return True
    x = np.asarray(features, dtype=np.float32)
    amax = np.abs(x).max(axis=0)
    if float(amax.max()) > _F16_MAX:
        return False
    sd = x.std(axis=0)
    varies = sd > 0
    rounding = np.maximum(amax * 2.0**-11, 2.0**-25)  # half a step; the subnormal floor
    return bool(np.all(rounding[varies] <= FLOAT16_SD_SHARE * sd[varies]))
