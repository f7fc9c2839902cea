"""A planted-signal simulator: tiles and a cohort table with a known true risk, in memory.

:func:`draw_cohort` draws a cohort; :func:`~mil_crcrs.simulate.write.simulate_cohort` also
writes it. Each patient's tiles are drawn from a small "world" of tile phenotypes in ``dim``
dimensions (:mod:`.world`):

- **background** tiles: one of four tissue clusters (the patient's mix of them varies, as
  nuisance), plus unit Gaussian noise;
- **rare** tiles (1-8 % of a patient's tiles by default, at least one per slide): background
  tiles whose coordinate along a hidden signal direction is replaced by plus or minus (a coin
  flip per tile) the patient's rare-tile **grade**, drawn uniformly from 4 to 7 (background tiles
  have a standard normal coordinate there). Rare tiles have the *same mean* as background tiles,
  so the bag mean moves with neither the rare fraction nor the grade: a linear model of
  mean-pooled features cannot see them. A per-tile non-linear detector (the size of that
  coordinate) finds the rare tiles; to read their grade a model must then look at those tiles
  alone, because the rare fraction, which varies eight-fold between patients and says nothing
  about the outcome, dilutes any average over the whole bag (the classic case for attention
  pooling: a tumour's grade matters, not how much of it the slide happened to cut);
- **prevalence** tiles (5-50 %): a separate cluster whose centre is away from the background, so
  the bag mean moves linearly with their fraction.

The true risk (log-hazard) is ``effect`` times a standardised (mean 0, sd 1 over the cohort)
patient quantity that depends on the scenario:

- ``"rare"``: the rare-tile grade;
- ``"prevalence"``: the realised prevalence fraction;
- ``"both"``: the standardised sum of the two standardised quantities;
- ``"null"``: zero for everyone (rare tiles and grades are still planted, unrelated to the
  outcome);
- ``"cluster"``: the **presence** (0 or 1) of one small spatial cluster of ``cluster_tiles``
  (4-8 by default) adjacent tiles of the rare phenotype on one of the patient's slides, planted
  in a ``cluster_share`` of the patients (half by default); no other rare tiles are planted. The
  cluster tiles share the background mean, so the bag mean does not move with them: a linear
  model of mean-pooled features is blind. A bag average of a per-tile detector sees the cluster
  only as its share of the bag, a few tiles in hundreds or thousands (a few per mille), a
  signal diluted by the bag's size that a model must learn from; attention or max pooling can
  single the tiles out. A random subset of a large bag's tiles often holds none of them.

The patients' survival, censoring and covariates follow from the true risk (:mod:`.outcome`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mil_crcrs.simulate.outcome import (
    draw_age,
    draw_stage,
    draw_survival,
    in_time_unit,
    true_risk,
)
from mil_crcrs.simulate.settings import SimulationSettings
from mil_crcrs.simulate.world import (
    MARGIN_LEVEL0,
    N_CLUSTERS,
    RARE_GRADE,
    TILE_SIZE_LEVEL0,
    draw_slide,
    feature_scales,
    make_world,
)


@dataclass(frozen=True)
class CohortDraw:
    """A simulated cohort in memory (what :func:`simulate_cohort` writes).

    Attributes
    ----------
    settings : how it was drawn
    clinical : one row per slide: ``patient_id``, ``slide_id``, ``time``, ``event``, ``stage``,
        ``age``
    truth : indexed by ``patient_id``: ``true_risk`` (log-hazard), ``rare_grade`` (how far
        out the patient's rare tiles sit; NaN where none are planted), the realised
        ``rare_fraction`` and ``prevalence_fraction`` of the patient's tiles (the cluster's
        tiles count as rare) and ``cluster_tiles`` (0 without a cluster)
    oracle_c : Harrell's C of the true risk against the simulated outcome
    features : slide id -> (n_tiles, dim) float32
    coords : slide id -> (n_tiles, 2) int64 level-0 top-left (x, y) on a tile grid
    planted : slide id -> (n_tiles,) bool, True for tiles of the scenario's phenotype(s)
    """

    settings: SimulationSettings
    clinical: pd.DataFrame
    truth: pd.DataFrame
    oracle_c: float
    features: dict[str, np.ndarray] = field(repr=False)
    coords: dict[str, np.ndarray] = field(repr=False)
    planted: dict[str, np.ndarray] = field(repr=False)

    @property
    def true_risk(self) -> pd.Series:
        return self.truth["true_risk"]


@dataclass
class _Tiles:
    """The slides drawn so far and, per patient, what was planted in them.

    Attributes
    ----------
    rows : (patient_id, slide_id) per slide
    features, coords, planted : slide id -> as in :class:`CohortDraw`
    rare_grade, rare_fraction, prevalence_fraction, cluster_tiles : (n_patients,) as in
        :attr:`CohortDraw.truth`
    """

    n_patients: int
    rows: list[tuple[str, str]] = field(default_factory=list)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    planted: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rare_grade = np.full(self.n_patients, np.nan)
        self.rare_fraction = np.zeros(self.n_patients)
        self.prevalence_fraction = np.zeros(self.n_patients)
        self.cluster_tiles = np.zeros(self.n_patients, dtype=np.int64)

    def truth(self, risk: np.ndarray, index: pd.Index) -> pd.DataFrame:
        """The cohort's ``truth`` table (see :class:`CohortDraw`)."""
        return pd.DataFrame(
            {
                "true_risk": risk,
                "rare_grade": self.rare_grade,
                "rare_fraction": self.rare_fraction,
                "prevalence_fraction": self.prevalence_fraction,
                "cluster_tiles": self.cluster_tiles,
            },
            index=index,
        )


def _cluster_draw(
    s: SimulationSettings, n_slides: int, rng: np.random.Generator
) -> tuple[int, int]:
    """(tiles in the patient's cluster, the slide it is on): (0, -1) for a patient without one,
    and for every patient outside the "cluster" scenario (which draws nothing here)."""
    if s.scenario != "cluster" or rng.random() >= s.cluster_share:
        return 0, -1
    k = int(rng.integers(s.cluster_tiles[0], s.cluster_tiles[1] + 1))
    return k, int(rng.integers(n_slides))


def _draw_tiles(s: SimulationSettings, patient_ids: list[str], rng: np.random.Generator) -> _Tiles:
    """Every patient's slides, drawn one patient after the other from ``rng``."""
    world = make_world(s.dim, s.world_seed)
    scale, offset = feature_scales(s)
    plant_rare = s.scenario in ("rare", "both", "null")
    plant_prev = s.scenario in ("prevalence", "both")
    tiles = _Tiles(len(patient_ids))
    for i, pid in enumerate(patient_ids):
        weights = rng.dirichlet(np.full(N_CLUSTERS, 2.0))
        f_rare = rng.uniform(*s.rare_fraction) if plant_rare else 0.0
        grade = rng.uniform(*RARE_GRADE)
        f_prev = rng.uniform(*s.prevalence_fraction) if plant_prev else 0.0
        n_slides = int(rng.integers(s.slides_per_patient[0], s.slides_per_patient[1] + 1))
        k, on_slide = _cluster_draw(s, n_slides, rng)
        counts = np.zeros(3)  # tiles, rare, prevalence
        for j in range(n_slides):
            sid = f"{pid}-S{j + 1}"
            n = int(rng.integers(s.tiles_per_slide[0], s.tiles_per_slide[1] + 1))
            x, grid, rare, prev = draw_slide(
                n, weights, f_rare, grade, f_prev, world, rng, k if j == on_slide else 0
            )
            tiles.features[sid] = (x * scale + offset).astype(np.float32)
            tiles.coords[sid] = grid * TILE_SIZE_LEVEL0 + MARGIN_LEVEL0
            tiles.planted[sid] = rare | prev  # all False for a phenotype that is not planted
            counts += (n, rare.sum(), prev.sum())
            tiles.rows.append((pid, sid))
        tiles.rare_fraction[i], tiles.prevalence_fraction[i] = counts[1:] / counts[0]
        tiles.cluster_tiles[i] = counts[1] if s.scenario == "cluster" else 0
        if plant_rare:
            tiles.rare_grade[i] = grade
    return tiles


def draw_cohort(settings: SimulationSettings = SimulationSettings()) -> CohortDraw:
    """Draw a cohort with a planted signal, in memory (:func:`simulate_cohort` also writes it).

    Parameters
    ----------
    settings : how to draw it; the same settings always give the same cohort

    Returns
    -------
    CohortDraw with the tiles of every slide, the cohort table and the truth.
    """
    from mil_crcrs.stats.metrics import harrell_c  # imports scikit-survival: only when simulating

    s = settings
    rng_tiles, rng_outcome, rng_clinical = (
        np.random.default_rng(seq) for seq in np.random.SeedSequence(s.seed).spawn(3)
    )
    patient_ids = [f"P{i + 1:04d}" for i in range(s.n_patients)]
    tiles = _draw_tiles(s, patient_ids, rng_tiles)

    risk = true_risk(s, tiles.rare_grade, tiles.prevalence_fraction, tiles.cluster_tiles)
    days, event = draw_survival(s, risk, rng_outcome)
    time = in_time_unit(days, s.time_unit)
    per_patient = pd.DataFrame(
        {
            "time": time,
            "event": event,
            "stage": draw_stage(risk, s.effect, rng_clinical),
            "age": draw_age(s.n_patients, rng_clinical),
        },
        index=pd.Index(patient_ids, name="patient_id"),
    )
    slides = pd.DataFrame(tiles.rows, columns=["patient_id", "slide_id"])
    return CohortDraw(
        settings=s,
        clinical=slides.join(per_patient, on="patient_id"),
        truth=tiles.truth(risk, per_patient.index),
        oracle_c=harrell_c(time, event, risk),  # 0.5 for "null": every pair is tied
        features=tiles.features,
        coords=tiles.coords,
        planted=tiles.planted,
    )
