"""Patient bags: a patient's slides joined into one bag, and padded batches of bags.

A :class:`PatientBags` reads a patient's feature files only when asked (optionally keeping them
once read), so a cohort need not sit in memory. :func:`collate` pads a list of bags into one
tensor with a mask, which is what every aggregator takes: no Python loop over bags in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mil_crcrs.data.cohort import Cohort
from mil_crcrs.data.store import FeatureStore


@dataclass
class PatientBag:
    """All tiles of one patient.

    Attributes
    ----------
    patient_id : str
    features : (n_tiles, dim) float16 or float32 array
    coords : (n_tiles, 2) int64 level-0 (x, y); -1 where a file has no coords
    grid : (n_tiles, 2) int64 tile-grid (col, row); a patient's slides sit side by side
    slide_ids : the patient's slides, in order
    tile_slide : (n_tiles,) int64 index into ``slide_ids`` of each tile's slide
    coords_notes : per slide, why its level-0 coords are unknown ('' where they are known)
    """

    patient_id: str
    features: np.ndarray
    coords: np.ndarray
    grid: np.ndarray
    slide_ids: tuple[str, ...]
    tile_slide: np.ndarray
    coords_notes: tuple[str, ...] = ()

    @property
    def n_tiles(self) -> int:
        return int(self.features.shape[0])


def _grid_step(coords: np.ndarray) -> int:
    """Tile step in level-0 pixels, inferred as the smallest gap between distinct x or y."""
    gaps = []
    for axis in (0, 1):
        values = np.unique(coords[:, axis])
        if values.size > 1:
            gaps.append(int(np.diff(values).min()))
    return max(1, min(gaps)) if gaps else 1


def grid_positions(coords: np.ndarray, step: int | None = None) -> np.ndarray:
    """(n, 2) integer grid positions of tiles at level-0 ``coords`` (n, 2), origin at zero."""
    if coords.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64)
    step = step or _grid_step(coords)
    return ((coords - coords.min(axis=0)) // step).astype(np.int64)


class PatientBags(Sequence[PatientBag]):
    """The bags of a cohort's patients, read lazily from a :class:`FeatureStore`.

    Parameters
    ----------
    cohort : the patients and their slides (slides must be in ``store``)
    store : where the feature files are
    cache : keep bags in memory once read (training re-reads every epoch)
    """

    def __init__(self, cohort: Cohort, store: FeatureStore, cache: bool = False) -> None:
        self.cohort = cohort
        self.store = store
        self.cache = cache
        self._cache: dict[int, PatientBag] = {}
        slide_ids = [s for p in cohort.patient_ids for s in cohort.slides[p]]
        self.feature_dim, self.encoder = store.check_consistent(slide_ids)

    def __len__(self) -> int:
        return len(self.cohort)

    @property
    def n_tiles(self) -> np.ndarray:
        """(n_patients,) tiles of each bag, from the files' metadata (no features read)."""
        return np.array(
            [
                sum(self.store.info(s).n_tiles for s in self.cohort.slides[p])
                for p in self.cohort.patient_ids
            ],
            dtype=np.int64,
        )

    def __getitem__(self, index: int) -> PatientBag:  # type: ignore[override]
        if index in self._cache:
            return self._cache[index]
        pid = self.cohort.patient_ids[index]
        bag = self._load(pid)
        if self.cache:
            self._cache[index] = bag
        return bag

    def _load(self, patient_id: str) -> PatientBag:
        slide_ids = self.cohort.slides[patient_id]
        feats, coords, grids, owner, notes = [], [], [], [], []
        col_offset = 0
        for k, sid in enumerate(slide_ids):
            bag = self.store.load(sid)
            n = bag.features.shape[0]
            xy = bag.coords if bag.coords is not None else np.full((n, 2), -1, dtype=np.int64)
            if bag.coords is not None:
                grid = grid_positions(xy, bag.info.tile_size_level0)
            elif bag.coords_native is not None:  # microns or centres: the layout is still known
                grid = grid_positions(np.rint(bag.coords_native))
            else:  # no coords: lay tiles out in a square, the best PPEG can do
                side = int(np.ceil(np.sqrt(n)))
                grid = np.stack([np.arange(n) % side, np.arange(n) // side], axis=1)
            grid = grid + np.array([col_offset, 0])
            col_offset = int(grid[:, 0].max()) + 2  # one empty column between slides
            feats.append(bag.features)
            coords.append(xy)
            grids.append(grid)
            owner.append(np.full(n, k, dtype=np.int64))
            notes.append(bag.info.coords_note)
        return PatientBag(
            patient_id=patient_id,
            features=np.concatenate(feats) if len(feats) > 1 else feats[0],
            coords=np.concatenate(coords),
            grid=np.concatenate(grids).astype(np.int64),
            slide_ids=tuple(slide_ids),
            tile_slide=np.concatenate(owner),
            coords_notes=tuple(notes),
        )


@dataclass
class PaddedBatch:
    """Bags padded to a common length.

    Attributes
    ----------
    features : (batch, max_tiles, dim) float tensor; padding rows are zero
    mask : (batch, max_tiles) bool tensor, True for a real tile
    grid : (batch, max_tiles, 2) long tensor of tile-grid positions (0 on padding)
    """

    features: torch.Tensor
    mask: torch.Tensor
    grid: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PaddedBatch:
        return PaddedBatch(
            self.features.to(device, non_blocking=non_blocking),
            self.mask.to(device, non_blocking=non_blocking),
            self.grid.to(device, non_blocking=non_blocking),
        )


def collate(
    bags: Sequence[PatientBag],
    max_tiles: int | None = None,
    rng: np.random.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> PaddedBatch:
    """Pad ``bags`` into one :class:`PaddedBatch`.

    Parameters
    ----------
    bags : the bags
    max_tiles : if set, a bag with more tiles is cut to a random subset of this many (training
        only: prediction always uses every tile)
    rng : the generator for that subset (required with ``max_tiles``, for reproducibility)
    dtype : dtype of the features tensor
    """
    chosen = []
    for bag in bags:
        idx = None
        if max_tiles is not None and bag.n_tiles > max_tiles:
            if rng is None:
                raise ValueError("collate(max_tiles=...) needs an rng")
            idx = np.sort(rng.choice(bag.n_tiles, size=max_tiles, replace=False))
        chosen.append(idx)
    lengths = [
        bag.n_tiles if idx is None else idx.size for bag, idx in zip(bags, chosen, strict=True)
    ]
    n_max = max(lengths)
    dim = bags[0].features.shape[1]
    features = torch.zeros((len(bags), n_max, dim), dtype=dtype)
    grid = torch.zeros((len(bags), n_max, 2), dtype=torch.long)
    mask = torch.zeros((len(bags), n_max), dtype=torch.bool)
    for i, (bag, idx, n) in enumerate(zip(bags, chosen, lengths, strict=True)):
        feats = bag.features if idx is None else bag.features[idx]
        pos = bag.grid if idx is None else bag.grid[idx]
        features[i, :n] = torch.from_numpy(np.ascontiguousarray(feats)).to(dtype)
        grid[i, :n] = torch.from_numpy(pos)
        mask[i, :n] = True
    return PaddedBatch(features=features, mask=mask, grid=grid)
