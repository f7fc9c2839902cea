"""Two streamed passes over a cohort's bags: a per-slide tile sample to fit phenotypes on, then
every tile's phenotype with the model's attention and contribution.

Neither pass holds more than one patient's features at a time; what is kept per tile is a few
numbers (:class:`CohortTiles`), plus the PCA coordinates of a bounded sample of tiles for the 2-D
map. The per-tile attention and contribution are the ones the heatmaps show:
:func:`mil_crcrs.explain.scores.tile_scores`, i.e. the ensemble's one ``risk()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mil_crcrs.data.bags import PatientBag
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.explain.scores import tile_scores
from mil_crcrs.phenotypes.clustering import PhenotypeModel
from mil_crcrs.runlog import Eta, progress_log


def sample_features(
    bags: Sequence[PatientBag], per_slide: int, max_tiles: int, seed: int
) -> np.ndarray:
    """Up to ``per_slide`` random tiles of every slide, at most ``max_tiles`` in all.

    Parameters
    ----------
    bags : the cohort's patient bags (read one at a time)
    per_slide : tiles drawn from each slide (all of a smaller slide's)
    max_tiles : cap on the whole sample (drawn uniformly from the per-slide samples)
    seed : the draw; slide ``k`` of patient ``i`` always draws with ``[seed, i, k]``

    Returns
    -------
    (n, D) float32 sampled features
    """
    parts = []
    for i in range(len(bags)):
        bag = bags[i]
        for k in range(len(bag.slide_ids)):
            rows = np.flatnonzero(bag.tile_slide == k)
            if rows.size > per_slide:
                rng = np.random.default_rng([seed, i, k])
                rows = np.sort(rng.choice(rows, per_slide, replace=False))
            parts.append(np.asarray(bag.features[rows], dtype=np.float32))
    sample = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    if sample.shape[0] > max_tiles:
        keep = np.random.default_rng([seed, -1]).choice(sample.shape[0], max_tiles, replace=False)
        sample = sample[np.sort(keep)]
    return sample


@dataclass(frozen=True)
class CohortTiles:
    """Every tile of a cohort with its phenotype and the model's scores.

    Attributes
    ----------
    patient_ids : (P,) the patients, in cohort order
    crcrs : (P,) float64 each patient's CRCRS from the same ensemble
    slide_ids : (S,) every slide, patient by patient
    patient, slide : (n,) int32 index of each tile's patient and slide
    row : (n,) int32 the tile's row in its slide's feature file
    coords : (n, 2) int64 level-0 top-left (x, y); -1 where unknown
    phenotype : (n,) int16 in 1..K
    distance : (n,) float32 distance to the phenotype's centre (PCA space)
    attention : (n,) float32 the ensemble's attention (sums to 1 over a patient's tiles)
    attention_x_n : (n,) float32 attention times the patient's tile count (1 = uniform)
    contribution : (n,) float32 the tile's additive share of the CRCRS
    map_tiles : (m,) int64 tiles drawn for the 2-D map
    map_embedding : (m, p) float32 their PCA coordinates
    """

    patient_ids: list[str]
    crcrs: np.ndarray
    slide_ids: list[str]
    patient: np.ndarray
    slide: np.ndarray
    row: np.ndarray
    coords: np.ndarray
    phenotype: np.ndarray
    distance: np.ndarray
    attention: np.ndarray
    attention_x_n: np.ndarray
    contribution: np.ndarray
    map_tiles: np.ndarray
    map_embedding: np.ndarray

    @property
    def n_tiles(self) -> int:
        return int(self.phenotype.shape[0])

    def frame(self, tiles: np.ndarray | None = None) -> pd.DataFrame:
        """One row per tile (or per tile of ``tiles``): ids, coords, phenotype and scores."""
        idx = np.arange(self.n_tiles) if tiles is None else np.asarray(tiles, dtype=np.int64)
        return pd.DataFrame(
            {
                "patient_id": np.asarray(self.patient_ids, dtype=object)[self.patient[idx]],
                "slide_id": np.asarray(self.slide_ids, dtype=object)[self.slide[idx]],
                "tile": self.row[idx],
                "x": self.coords[idx, 0],
                "y": self.coords[idx, 1],
                "phenotype": self.phenotype[idx],
                "distance": self.distance[idx],
                "attention": self.attention[idx],
                "attention_x_n": self.attention_x_n[idx],
                "contribution": self.contribution[idx],
            }
        )


def assign_cohort(
    model: CRCRSModel,
    phenotypes: PhenotypeModel,
    bags: Sequence[PatientBag],
    map_tiles: int,
    seed: int,
) -> CohortTiles:
    """Score and assign every tile of every patient, one bag at a time.

    Parameters
    ----------
    model : the trained ensemble (scores where it is)
    phenotypes : the fitted phenotypes
    bags : the cohort's patient bags
    map_tiles : about how many tiles to keep PCA coordinates of, for the 2-D map
    seed : draws the map's tiles

    Returns
    -------
    CohortTiles
    """
    if hasattr(bags, "n_tiles"):  # PatientBags: from the files' metadata, no features read
        total = int(np.sum(bags.n_tiles))
    else:
        total = sum(bag.n_tiles for bag in bags)
    rate = min(1.0, map_tiles / max(total, 1))
    rng = np.random.default_rng([seed, 1])
    cols: dict[str, list[np.ndarray]] = {k: [] for k in _COLUMNS}
    patient_ids, crcrs, slide_ids, map_tiles_list, map_emb = [], [], [], [], []
    offset, eta = 0, Eta(len(bags))
    for i in range(len(bags)):
        bag = bags[i]
        scores = tile_scores(model, bag)
        labels, dist = phenotypes.assign(bag.features)
        n = bag.n_tiles
        patient_ids.append(bag.patient_id)
        crcrs.append(scores.crcrs)
        cols["patient"].append(np.full(n, i, dtype=np.int32))
        cols["slide"].append((len(slide_ids) + np.asarray(bag.tile_slide)).astype(np.int32))
        slide_ids.extend(bag.slide_ids)
        cols["row"].append(scores.row_in_slide().astype(np.int32))
        cols["coords"].append(np.asarray(bag.coords, dtype=np.int64).reshape(n, 2))
        cols["phenotype"].append(labels.astype(np.int16))
        cols["distance"].append(dist)
        cols["attention"].append(scores.attention.astype(np.float32))
        cols["attention_x_n"].append((scores.attention * n).astype(np.float32))
        cols["contribution"].append(scores.contribution.astype(np.float32))
        picked = np.flatnonzero(rng.random(n) < rate)
        map_tiles_list.append(offset + picked)
        map_emb.append(phenotypes.embed(bag.features[picked]))
        offset += n
        progress_log.info("phenotypes: patient %s", eta.step())
    joined = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    return CohortTiles(
        patient_ids=patient_ids,
        crcrs=np.asarray(crcrs, dtype=np.float64),
        slide_ids=slide_ids,
        map_tiles=np.concatenate(map_tiles_list).astype(np.int64),
        map_embedding=np.concatenate(map_emb).astype(np.float32),
        **joined,
    )


_COLUMNS = (
    "patient",
    "slide",
    "row",
    "coords",
    "phenotype",
    "distance",
    "attention",
    "attention_x_n",
    "contribution",
)
