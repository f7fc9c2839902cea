"""Features read once per fit: a float16 bag cache with a memory budget, streaming above it.

A K-fold fit visits every bag in every epoch of every fold and scores every bag after each fold.
:class:`BagCache` reads the cohort's bags once, up front, into memory in float16, as many as fit
in a budget (``FitSettings.cache_gb``; by default :data:`DEFAULT_CACHE_SHARE` of the memory the
OS reports available). Bags beyond the budget stay on disk and are streamed: when training or
prediction announces the order it will visit bags in (:meth:`BagCache.prefetch`), a background
thread reads them ahead of use, up to :attr:`BagCache.read_ahead` bags, so the training step
does not wait for the disk as long as the disk keeps up (``h5py`` reads and torch's kernels both
release the interpreter for most of their work).

Cached and streamed bags are converted the same way (float16, or float32 for a bag float16 would
blur, see :func:`mil_crcrs.data.packed.float16_is_enough`), so a fit gives the same model whichever
of the two a bag took.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch

from mil_crcrs.data.bags import PatientBag, PatientBags
from mil_crcrs.data.packed import PackedBags, fits_on_device, float16_is_enough
from mil_crcrs.runlog import bars_wanted, progress_log

#: Share of the available memory (``MemAvailable``) the default cache budget takes.
DEFAULT_CACHE_SHARE = 0.5
#: Budget when the available memory cannot be read (not Linux).
FALLBACK_CACHE_GB = 4.0


def available_memory_gb() -> float | None:
    """Memory the OS says is available for new work (Linux ``MemAvailable``), in GiB, or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_cache_gb() -> float:
    """The default cache budget: :data:`DEFAULT_CACHE_SHARE` of the available memory."""
    available = available_memory_gb()
    return FALLBACK_CACHE_GB if available is None else DEFAULT_CACHE_SHARE * available


def to_cache_dtype(bag: PatientBag) -> PatientBag:
    """``bag`` with float16 features, or float32 where float16 would blur them."""
    feats = bag.features
    if feats.dtype == np.float16:
        return bag
    if not float16_is_enough(feats):
        return replace(bag, features=feats.astype(np.float32, copy=False))
    return replace(bag, features=feats.astype(np.float16))


def _bag_nbytes(bag: PatientBag) -> int:
    return sum(a.nbytes for a in (bag.features, bag.coords, bag.grid, bag.tile_slide))


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


class BagCache(Sequence[PatientBag]):
    """A cohort's bags, in memory up to a budget and streamed from disk above it.

    Parameters
    ----------
    bags : the cohort's lazily read bags (their ``cache`` flag is ignored)
    budget_gb : memory for the cached bags, in GiB; None = :func:`default_cache_gb`
    read_ahead : bags read ahead of use for the streamed part
    progress : show a progress bar while loading (on a terminal only, see
        :func:`mil_crcrs.runlog.bars_wanted`); the summary line with the throughput is logged
        either way
    log : where the summary line goes (default: the ``mil_crcrs.progress`` logger, which the CLI
        shows on stderr and keeps in ``run.log``)
    """

    def __init__(
        self,
        bags: PatientBags,
        budget_gb: float | None = None,
        read_ahead: int = 8,
        progress: bool = True,
        log: Callable[[str], None] | None = progress_log.info,
    ) -> None:
        self.bags = bags
        self.feature_dim, self.encoder = bags.feature_dim, bags.encoder
        self.budget_gb = default_cache_gb() if budget_gb is None else float(budget_gb)
        self.read_ahead = max(1, int(read_ahead))
        self._resident: dict[int, PatientBag] = {}
        self._queue: deque[tuple[int, Future]] = deque()
        self._pending: deque[int] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self.n_tiles = bags.n_tiles
        self._progress, self._log = progress, log
        self._stats: dict[str, float] | None = None

    @property
    def stats(self) -> dict[str, float]:
        """What loading took: bags and GiB cached and streamed, seconds, MB/s (loads first)."""
        if self._stats is None:
            self._stats = self._load(self._progress, self._log)
        return self._stats

    # -- sizes and loading -----------------------------------------------------------------------
    def _load(self, progress: bool, log: Callable[[str], None] | None) -> dict[str, float]:
        """Read bags into memory in cohort order until the next one would break the budget.

        Runs on first use, not on construction, so that a fit refused for its folds or its
        table does not read the features first."""
        from tqdm.auto import tqdm

        budget = self.budget_gb * 2**30
        # float16 features plus int64 coords, grid (2 each) and slide index per tile.
        est = self.n_tiles * (2 * self.feature_dim + 8 * 5)
        n_fit = int(np.searchsorted(np.cumsum(est), budget, side="right"))
        show = bars_wanted(progress)
        start, used = time.perf_counter(), 0
        for i in tqdm(range(n_fit), desc="reading features", disable=not show, leave=False):
            bag = to_cache_dtype(self.bags[i])
            used += _bag_nbytes(bag)
            self._resident[i] = bag
        seconds = time.perf_counter() - start
        stats = {
            "cached_bags": n_fit,
            "streamed_bags": len(self.bags) - n_fit,
            "cached_gb": used / 2**30,
            "streamed_gb": float(est[n_fit:].sum()) / 2**30,
            "load_s": seconds,
            "load_mb_per_s": used / 2**20 / seconds if seconds > 0 else float("nan"),
        }
        if log is not None:
            text = (
                f"features: read {n_fit} of {len(self.bags)} bags into memory "
                f"({_size(used)}, budget {self.budget_gb:.1f} GiB) in "
                f"{seconds:.1f} s, {stats['load_mb_per_s']:.0f} MB/s"
            )
            if n_fit < len(self.bags):
                text += (
                    f"; {stats['streamed_bags']} bags ({_size(est[n_fit:].sum())}) are "
                    "streamed from disk with read-ahead (raise --cache-gb to keep them)"
                )
            log(text)
        return stats

    # -- access ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, index: int) -> PatientBag:  # type: ignore[override]
        index = int(index)
        _ = self.stats  # loaded on first use
        if index in self._resident:
            return self._resident[index]
        if self._queue and self._queue[0][0] == index:
            _, future = self._queue.popleft()
            self._fill()
            return future.result()
        return to_cache_dtype(self.bags[index])  # an access nobody announced: read it now

    def prefetch(self, order: Iterable[int]) -> None:
        """Announce the order of the coming accesses: streamed bags are read ahead in it.

        Replaces any earlier announcement (bags read ahead and not used are dropped).
        """
        _ = self.stats  # loaded on first use
        self._queue.clear()
        self._pending = deque(int(i) for i in order if int(i) not in self._resident)
        if self._pending and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bag-read-ahead")
        self._fill()

    def _fill(self) -> None:
        while self._pending and len(self._queue) < self.read_ahead:
            index = self._pending.popleft()
            assert self._pool is not None
            self._queue.append((index, self._pool.submit(self._read, index)))

    def _read(self, index: int) -> PatientBag:
        return to_cache_dtype(self.bags[index])

    def subset(self, indices: Sequence[int]) -> BagSubset:
        """A lazy view of ``self[indices]`` (a list would hold streamed bags in memory)."""
        return BagSubset(self, np.asarray(indices, dtype=np.int64))

    def close(self) -> None:
        """Stop the read-ahead thread."""
        self._queue.clear()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class BagSubset(Sequence[PatientBag]):
    """``cache[indices]`` without reading anything until asked; forwards :meth:`prefetch`."""

    def __init__(self, cache: BagCache, indices: np.ndarray) -> None:
        self.cache, self.indices = cache, indices
        self.n_tiles = cache.n_tiles[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> PatientBag:  # type: ignore[override]
        return self.cache[int(self.indices[index])]

    def prefetch(self, order: Iterable[int]) -> None:
        self.cache.prefetch(self.indices[np.asarray(list(order), dtype=np.int64)])


#: ``FitSettings.resident`` choices: device-resident bags when they fit on a GPU, always
#: (also on the CPU, where the packed tensor is in host memory), or never.
RESIDENT_CHOICES = ("auto", "on", "off")


def open_training_bags(
    bags: PatientBags,
    device: torch.device,
    cache_gb: float | None = None,
    resident: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = progress_log.info,
) -> BagCache | PackedBags:
    """The bags a fit trains on, each read from disk once.

    Parameters
    ----------
    bags : the cohort's lazily read bags
    device : where training runs
    cache_gb : host memory budget of :class:`BagCache` (None = :func:`default_cache_gb`)
    resident : see :data:`RESIDENT_CHOICES`; "auto" packs the cohort on a CUDA device when it
        takes at most :data:`mil_crcrs.data.packed.DEVICE_SHARE` of the free device memory
    progress, log : as for :class:`BagCache`

    Returns
    -------
    :class:`~mil_crcrs.data.packed.PackedBags` on ``device``, or a :class:`BagCache`
    """
    if resident not in RESIDENT_CHOICES:
        raise ValueError(f"resident must be one of {RESIDENT_CHOICES}, got {resident!r}")
    n_tiles = bags.n_tiles
    if resident == "on" or (
        resident == "auto" and fits_on_device(n_tiles, bags.feature_dim, device)
    ):
        start = time.perf_counter()
        packed = PackedBags(CacheDtypeBags(bags), device, n_tiles)
        seconds = time.perf_counter() - start
        size = packed.features.element_size() * packed.features.numel()
        if log is not None:
            log(
                f"features: read {len(bags)} bags onto {device} ({_size(size)}) in "
                f"{seconds:.1f} s, {size / 1e6 / max(seconds, 1e-9):.0f} MB/s"
            )
        packed.stats = {"load_s": seconds, "cached_gb": size / 2**30, "streamed_gb": 0.0}
        return packed
    return BagCache(bags, cache_gb, progress=progress, log=log)


class CacheDtypeBags(Sequence[PatientBag]):
    """``bags`` converted by :func:`to_cache_dtype` as they are read, nothing kept.

    Prediction reads bags this way so that a model scores a patient exactly as the fit scored
    them from its cache (the same float16 rounding), whichever way the features are read.
    """

    def __init__(self, bags: PatientBags) -> None:
        self.bags, self.feature_dim, self.encoder = bags, bags.feature_dim, bags.encoder

    @property
    def n_tiles(self) -> np.ndarray:
        return self.bags.n_tiles

    def __len__(self) -> int:
        return len(self.bags)

    def __getitem__(self, index: int) -> PatientBag:  # type: ignore[override]
        return to_cache_dtype(self.bags[int(index)])
