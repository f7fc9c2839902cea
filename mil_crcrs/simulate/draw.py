"""A planted-signal simulator: feature files and a cohort table with a known true risk.

Each patient's tiles are drawn from a small "world" of tile phenotypes in ``dim`` dimensions:

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

Feature scales: real foundation-model features are far from isotropic (some dimensions vary
100 times more than others, most have non-zero means). ``scale_range`` > 1 multiplies each
output dimension by a scale drawn log-uniformly over a ``scale_range``-fold range (geometric
mean 1), and ``offset_sd`` > 0 adds a per-dimension offset of ``offset_sd`` times that
dimension's scale times a standard normal draw; both belong to the world (see below), so they
change nothing about the signal but its units.

Survival times follow a Weibull proportional-hazards model (exponential by default) with median
``median_survival_days`` at zero risk; independent exponential censoring is calibrated to censor
about ``censoring`` of the patients. The world (cluster centres, rotation) depends only on
``world_seed`` and ``dim``, so cohorts drawn with different ``seed`` share one "encoder" and can
serve as training and external validation cohorts.

Outputs of :func:`simulate_cohort` in ``out_dir``:

- ``features/<slide>.h5`` in our format (see :mod:`mil_crcrs.data.store`), with coords on a tile grid
  and an extra dataset ``sim_planted`` (n_tiles,) bool marking the planted tiles of the
  scenario's phenotype(s), which the feature reader ignores;
- ``clinical.csv``: ``patient_id``, ``slide_id``, ``time``, ``event`` and two covariates,
  ``stage`` (I-IV, correlated with the true risk but not identical) and ``age`` (independent);
- ``truth.csv``: ``patient_id``, ``true_risk``, ``rare_grade``, ``rare_fraction``,
  ``prevalence_fraction``, ``cluster_tiles``;
- ``simulation.json``: the settings and the oracle C-index.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mil_crcrs.atomic import write_csv, write_json
from mil_crcrs.data.cohort import DAYS_PER_UNIT, TIME_UNITS
from mil_crcrs.data.store import FeatureMeta, read_extra, write_bag
from mil_crcrs.errors import InputError

PLANTED = "sim_planted"  # the extra dataset of a simulated feature file: planted tiles
SCENARIOS = ("rare", "prevalence", "both", "null", "cluster")

SIGNAL_DIMS = 1  # the rare phenotype lives along this many (hidden) dimensions
MIN_DIM = 8
RARE_GRADE = (4.0, 7.0)  # rare tiles' distance from 0 along the signal (background: N(0, 1))
RARE_JITTER = 0.3  # noise around a rare tile's +-grade
PREVALENCE_SHIFT = 3.0  # distance of the prevalence cluster's centre from the origin
N_CLUSTERS = 4  # background tissue clusters
CLUSTER_SCALE = 0.5  # per-dimension spread of the background cluster centres
TILE_SIZE_PX = 224
SLIDE_MPP, TARGET_MPP = 0.25, 0.5
TILE_SIZE_LEVEL0 = int(TILE_SIZE_PX * TARGET_MPP / SLIDE_MPP)
MARGIN_LEVEL0 = 2 * TILE_SIZE_LEVEL0  # empty slide border around the tissue
STAGES = ("I", "II", "III", "IV")
STAGE_QUANTILES = (0.2, 0.5, 0.8)


@dataclass(frozen=True)
class SimulationSettings:
    """How a simulated cohort is drawn (saved as ``simulation.json`` beside it).

    Parameters
    ----------
    scenario : "rare", "prevalence", "both", "null" or "cluster" (see the module docstring)
    n_patients : number of patients
    tiles_per_slide : (min, max) tiles per slide, drawn uniformly
    slides_per_patient : (min, max) slides per patient, drawn uniformly
    dim : feature dimension (at least 8)
    effect : standard deviation of the true log-hazard across patients (ignored for "null")
    censoring : the fraction of patients to censor, about (0 = none)
    seed : draws the patients
    world_seed : draws the phenotypes ("the encoder"); keep it to draw comparable cohorts
    time_unit : "days", "months" or "years", the unit of ``time`` in ``clinical.csv``
    rare_fraction : (min, max) of a patient's rare-tile fraction, drawn uniformly; a slide of a
        patient with a positive fraction has at least one rare tile
    prevalence_fraction : (min, max) of a patient's prevalence-tile fraction, drawn uniformly
    median_survival_days : median survival at zero risk
    weibull_shape : shape of the Weibull baseline hazard (1 = exponential)
    dtype : "float32" or "float16", the dtype of the stored features
    cluster_tiles : (min, max) tiles of the "cluster" scenario's cluster, drawn uniformly
    cluster_share : share of patients with a cluster, about ("cluster" scenario)
    scale_range : ratio of the largest to the smallest per-dimension feature scale (1 = all 1)
    offset_sd : per-dimension feature offsets, in units of each dimension's scale (0 = none)
    """

    scenario: str = "rare"
    n_patients: int = 120
    tiles_per_slide: tuple[int, int] = (40, 120)
    slides_per_patient: tuple[int, int] = (1, 2)
    dim: int = 64
    effect: float = 1.5
    censoring: float = 0.3
    seed: int = 0
    world_seed: int = 0
    time_unit: str = "days"
    rare_fraction: tuple[float, float] = (0.01, 0.08)
    prevalence_fraction: tuple[float, float] = (0.05, 0.5)
    median_survival_days: float = 1826.0
    weibull_shape: float = 1.0
    dtype: str = "float32"
    cluster_tiles: tuple[int, int] = (4, 8)
    cluster_share: float = 0.5
    scale_range: float = 1.0
    offset_sd: float = 0.0

    def __post_init__(self) -> None:
        def fail(what: str) -> None:
            raise InputError(f"simulation settings: {what}")

        if self.scenario not in SCENARIOS:
            fail(f"scenario must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}")
        if self.n_patients < 2:
            fail(f"n_patients must be at least 2, got {self.n_patients}")
        for name in ("tiles_per_slide", "slides_per_patient"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                fail(f"{name} must be (min, max) with 1 <= min <= max, got {(lo, hi)}")
        for name in ("rare_fraction", "prevalence_fraction"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                fail(f"{name} must be (min, max) with 0 <= min <= max <= 1, got {(lo, hi)}")
        if self.rare_fraction[1] + self.prevalence_fraction[1] > 1.0:
            fail("rare_fraction and prevalence_fraction maxima must add up to at most 1")
        if self.dim < MIN_DIM:
            fail(f"dim must be at least {MIN_DIM}, got {self.dim}")
        if self.effect < 0:
            fail(f"effect must be non-negative, got {self.effect}")
        if not 0.0 <= self.censoring < 1.0:
            fail(f"censoring must be in [0, 1), got {self.censoring}")
        if self.time_unit not in TIME_UNITS:
            fail(f"time_unit must be one of {', '.join(TIME_UNITS)}, got {self.time_unit!r}")
        if self.median_survival_days <= 0 or self.weibull_shape <= 0:
            fail("median_survival_days and weibull_shape must be positive")
        if self.dtype not in ("float16", "float32"):
            fail(f"dtype must be float16 or float32, got {self.dtype!r}")
        lo, hi = self.cluster_tiles
        if not 1 <= lo <= hi:
            fail(f"cluster_tiles must be (min, max) with 1 <= min <= max, got {(lo, hi)}")
        if not 0.0 < self.cluster_share < 1.0:
            fail(f"cluster_share must be in (0, 1), got {self.cluster_share}")
        if self.scale_range < 1.0 or self.offset_sd < 0.0:
            fail("scale_range must be at least 1 and offset_sd non-negative")

    @property
    def encoder(self) -> str:
        """The name written as the feature files' encoder:
        ``simulated-<dim>[-w<world_seed>][-s<scale_range>-o<offset_sd>]``."""
        name = f"simulated-{self.dim}" + (f"-w{self.world_seed}" if self.world_seed else "")
        if self.scale_range != 1.0 or self.offset_sd != 0.0:
            name += f"-s{self.scale_range:g}-o{self.offset_sd:g}"
        return name

    def settings_hash(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SimulatedCohort:
    """What :func:`simulate_cohort` wrote, and the truth behind it.

    Attributes
    ----------
    out_dir, features_dir, clinical_csv, truth_csv : where the outputs are
    true_risk : Series of the true log-hazard, indexed by ``patient_id``
    oracle_c : Harrell's C of ``true_risk`` against the simulated outcome (0.5 for "null")
    planted : slide id -> (n_tiles,) bool array, True for the tiles carrying the scenario's
        phenotype(s) (the rare tiles for "null")
    settings : how the cohort was drawn
    """

    out_dir: Path
    features_dir: Path
    clinical_csv: Path
    truth_csv: Path
    true_risk: pd.Series
    oracle_c: float
    planted: dict[str, np.ndarray] = field(repr=False)
    settings: SimulationSettings


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


@dataclass(frozen=True)
class _World:
    rotation: np.ndarray  # (dim, dim) orthogonal, applied to every tile
    centres: np.ndarray  # (N_CLUSTERS, dim) background cluster centres
    prevalence_centre: np.ndarray  # (dim,)


def _world(dim: int, world_seed: int) -> _World:
    rng = np.random.default_rng([world_seed, dim])
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    rotation = q * np.sign(np.diag(r))
    # Cluster centres stay out of the signal subspace, so a tile's signal part has mean zero
    # whatever its cluster.
    centres = np.zeros((N_CLUSTERS, dim))
    centres[:, SIGNAL_DIMS:] = CLUSTER_SCALE * rng.standard_normal((N_CLUSTERS, dim - SIGNAL_DIMS))
    direction = rng.standard_normal(dim - SIGNAL_DIMS)
    prevalence_centre = np.zeros(dim)
    prevalence_centre[SIGNAL_DIMS:] = PREVALENCE_SHIFT * direction / np.linalg.norm(direction)
    return _World(rotation=rotation, centres=centres, prevalence_centre=prevalence_centre)


def _tile_grid(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) int64 (col, row) cells of a roughly round, contiguous piece of tissue."""
    side = int(np.ceil(np.sqrt(n / 0.6)))
    cols, rows = np.meshgrid(np.arange(side), np.arange(side))
    cells = np.stack([cols.ravel(), rows.ravel()], axis=1)
    centre = (side - 1) / 2.0
    ragged = np.hypot(*(cells - centre).T) + rng.uniform(0.0, 1.5, len(cells))
    chosen = cells[np.sort(np.argsort(ragged)[:n])]  # row-major, as extractors write them
    return chosen.astype(np.int64)


def _focus(grid: np.ndarray, free: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` free tiles clustered around a random free tile (a focal region)."""
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.flatnonzero(free)
    seed = grid[rng.choice(candidates)]
    distance = np.hypot(*(grid[candidates] - seed).T) + rng.uniform(0.0, 1.0, len(candidates))
    return candidates[np.argsort(distance)[:k]]


def _patch(grid: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` tiles (fewer if the piece of tissue is smaller) forming one connected
    patch (8-neighbourhood) grown from a random tile, one random neighbour at a time."""
    cells = {tuple(c): i for i, c in enumerate(grid.tolist())}
    chosen = [int(rng.integers(len(grid)))]
    while len(chosen) < min(k, len(grid)):
        taken = set(chosen)
        border = sorted(
            {
                cells[(x + dx, y + dy)]
                for x, y in (grid[i] for i in chosen)
                for dx in (-1, 0, 1)
                for dy in (-1, 0, 1)
                if (x + dx, y + dy) in cells and cells[(x + dx, y + dy)] not in taken
            }
        )
        if not border:  # an island of tissue smaller than k
            break
        chosen.append(border[int(rng.integers(len(border)))])
    return np.asarray(chosen, dtype=np.int64)


def _draw_slide(
    n: int,
    weights: np.ndarray,
    f_rare: float,
    grade: float,
    f_prev: float,
    world: _World,
    rng: np.random.Generator,
    n_cluster: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features (n, dim) float64, grid (n, 2), rare mask (n,), prevalence mask (n,).

    With ``f_rare`` 0, ``n_cluster`` tiles of the rare phenotype are planted as one cluster of
    adjacent tiles (the "cluster" scenario; 0 = none)."""
    dim = world.centres.shape[1]
    grid = _tile_grid(n, rng)
    n_rare = max(1, rng.binomial(n, f_rare)) if f_rare > 0 else min(n_cluster, n)
    n_prev = min(rng.binomial(n, f_prev), n - n_rare)
    rare = np.zeros(n, dtype=bool)
    if f_rare > 0:
        rare[_focus(grid, ~rare, n_rare, rng)] = True
    elif n_rare > 0:  # the "cluster" scenario's patch (no draws for other scenarios)
        rare[_patch(grid, n_rare, rng)] = True
    prev = np.zeros(n, dtype=bool)
    prev[_focus(grid, ~rare, n_prev, rng)] = True

    cluster = rng.choice(N_CLUSTERS, size=n, p=weights)
    features = world.centres[cluster] + rng.standard_normal((n, dim))
    features[prev] = world.prevalence_centre + rng.standard_normal((int(prev.sum()), dim))
    direction = rng.standard_normal((n_rare, SIGNAL_DIMS))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    features[rare, :SIGNAL_DIMS] = grade * direction + RARE_JITTER * rng.standard_normal(
        (n_rare, SIGNAL_DIMS)
    )
    return features @ world.rotation.T, grid, rare, prev


def _feature_scales(s: SimulationSettings) -> tuple[np.ndarray, np.ndarray]:
    """(dim,) per-dimension scale and offset of the world's features (see the module docstring);
    ones and zeros unless ``scale_range`` > 1 or ``offset_sd`` > 0."""
    rng = np.random.default_rng([s.world_seed, s.dim, 1])
    half = np.log(s.scale_range) / 2.0
    scale = np.exp(rng.uniform(-half, half, s.dim)) if s.scale_range > 1.0 else np.ones(s.dim)
    offset = s.offset_sd * scale * rng.standard_normal(s.dim)
    return scale, offset


def _standardise(values: np.ndarray) -> np.ndarray:
    """Per-patient values scaled to mean 0 and standard deviation 1 over the cohort."""
    sd = values.std()
    return (values - values.mean()) / sd if sd > 0 else np.zeros_like(values)


def _true_risk(
    s: SimulationSettings, grade: np.ndarray, prev: np.ndarray, cluster: np.ndarray
) -> np.ndarray:
    """The log-hazard of each patient from the rare-tile grade, the prevalence fraction and the
    number of cluster tiles (whose presence is the "cluster" scenario's risk)."""
    if s.scenario == "null":
        return np.zeros_like(prev)
    if s.scenario == "cluster":
        return s.effect * _standardise((cluster > 0).astype(np.float64))
    if s.scenario == "rare":
        return s.effect * _standardise(grade)
    if s.scenario == "prevalence":
        return s.effect * _standardise(prev)
    return s.effect * _standardise(_standardise(grade) + _standardise(prev))


def _censoring_rate(event_time: np.ndarray, target: float) -> float:
    """The exponential censoring rate that censors ``target`` of these event times on average."""

    def censored(rate: float) -> float:
        return float(np.mean(1.0 - np.exp(-rate * event_time)))

    lo, hi = 1e-12, 1.0 / event_time.min()
    while censored(hi) < target:
        hi *= 10.0
    for _ in range(100):  # bisection on the log scale
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if censored(mid) < target else (lo, mid)
    return float(np.sqrt(lo * hi))


def _outcome(
    s: SimulationSettings, risk: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Follow-up times in days (n,) and events (n,) 0/1 under Weibull PH with log-hazard ``risk``."""
    k = s.weibull_shape
    scale = s.median_survival_days / np.log(2.0) ** (1.0 / k)
    event_time = scale * (rng.exponential(size=risk.shape) * np.exp(-risk)) ** (1.0 / k)
    if s.censoring == 0:
        return event_time, np.ones(risk.shape, dtype=np.int64)
    censor_time = rng.exponential(size=risk.shape) / _censoring_rate(event_time, s.censoring)
    return np.minimum(event_time, censor_time), (event_time <= censor_time).astype(np.int64)


def _stage(risk: np.ndarray, effect: float, rng: np.random.Generator) -> np.ndarray:
    """Stage I-IV from the true risk plus as much noise again (correlation about 0.7)."""
    latent = risk + rng.normal(0.0, effect if np.any(risk) else 1.0, risk.shape)
    cuts = np.quantile(latent, STAGE_QUANTILES)
    return np.asarray(STAGES)[np.searchsorted(cuts, latent)]


def _cluster_draw(
    s: SimulationSettings, n_slides: int, rng: np.random.Generator
) -> tuple[int, int]:
    """(tiles in the patient's cluster, the slide it is on): (0, -1) for a patient without one,
    and for every patient outside the "cluster" scenario (which draws nothing here)."""
    if s.scenario != "cluster" or rng.random() >= s.cluster_share:
        return 0, -1
    k = int(rng.integers(s.cluster_tiles[0], s.cluster_tiles[1] + 1))
    return k, int(rng.integers(n_slides))


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
    world = _world(s.dim, s.world_seed)
    scale, offset = _feature_scales(s)
    rng_tiles, rng_outcome, rng_clinical = (
        np.random.default_rng(seq) for seq in np.random.SeedSequence(s.seed).spawn(3)
    )
    plant_rare = s.scenario in ("rare", "both", "null")
    plant_prev = s.scenario in ("prevalence", "both")

    patient_ids = [f"P{i + 1:04d}" for i in range(s.n_patients)]
    rows, features, coords, planted = [], {}, {}, {}
    rare_fraction = np.zeros(s.n_patients)
    rare_grade = np.full(s.n_patients, np.nan)
    prev_fraction = np.zeros(s.n_patients)
    cluster_tiles = np.zeros(s.n_patients, dtype=np.int64)
    for i, pid in enumerate(patient_ids):
        weights = rng_tiles.dirichlet(np.full(N_CLUSTERS, 2.0))
        f_rare = rng_tiles.uniform(*s.rare_fraction) if plant_rare else 0.0
        grade = rng_tiles.uniform(*RARE_GRADE)
        f_prev = rng_tiles.uniform(*s.prevalence_fraction) if plant_prev else 0.0
        n_slides = int(rng_tiles.integers(s.slides_per_patient[0], s.slides_per_patient[1] + 1))
        k, on_slide = _cluster_draw(s, n_slides, rng_tiles)
        counts = np.zeros(3)  # tiles, rare, prevalence
        for j in range(n_slides):
            sid = f"{pid}-S{j + 1}"
            n = int(rng_tiles.integers(s.tiles_per_slide[0], s.tiles_per_slide[1] + 1))
            x, grid, rare, prev = _draw_slide(
                n, weights, f_rare, grade, f_prev, world, rng_tiles, k if j == on_slide else 0
            )
            features[sid] = (x * scale + offset).astype(np.float32)
            coords[sid] = grid * TILE_SIZE_LEVEL0 + MARGIN_LEVEL0
            planted[sid] = rare | prev  # all False for a phenotype that is not planted
            counts += (n, rare.sum(), prev.sum())
            rows.append((pid, sid))
        rare_fraction[i], prev_fraction[i] = counts[1:] / counts[0]
        cluster_tiles[i] = counts[1] if s.scenario == "cluster" else 0
        if plant_rare:
            rare_grade[i] = grade

    risk = _true_risk(s, rare_grade, prev_fraction, cluster_tiles)
    days, event = _outcome(s, risk, rng_outcome)
    if s.time_unit == "days":
        time = np.maximum(np.round(days), 1.0)
    else:
        time = np.maximum(np.round(days / DAYS_PER_UNIT[s.time_unit], 2), 0.01)
    stage = _stage(risk, s.effect, rng_clinical)
    age = np.clip(np.round(rng_clinical.normal(65.0, 10.0, s.n_patients)), 30, 95).astype(int)

    index = pd.Index(patient_ids, name="patient_id")
    per_patient = pd.DataFrame(
        {"time": time, "event": event, "stage": stage, "age": age}, index=index
    )
    slides = pd.DataFrame(rows, columns=["patient_id", "slide_id"])
    truth = pd.DataFrame(
        {
            "true_risk": risk,
            "rare_grade": rare_grade,
            "rare_fraction": rare_fraction,
            "prevalence_fraction": prev_fraction,
            "cluster_tiles": cluster_tiles,
        },
        index=index,
    )
    return CohortDraw(
        settings=s,
        clinical=slides.join(per_patient, on="patient_id"),
        truth=truth,
        oracle_c=harrell_c(time, event, risk),  # 0.5 for "null": every pair is tied
        features=features,
        coords=coords,
        planted=planted,
    )


def _write_slide(path: Path, draw: CohortDraw, slide_id: str) -> None:
    s, xy = draw.settings, draw.coords[slide_id]
    meta = FeatureMeta(
        slide_id=slide_id,
        encoder=s.encoder,
        tile_size_px=TILE_SIZE_PX,
        tile_size_level0=TILE_SIZE_LEVEL0,
        target_mpp=TARGET_MPP,
        slide_mpp=SLIDE_MPP,
        level0_width=int(xy[:, 0].max()) + TILE_SIZE_LEVEL0 + MARGIN_LEVEL0,
        level0_height=int(xy[:, 1].max()) + TILE_SIZE_LEVEL0 + MARGIN_LEVEL0,
        settings_hash=s.settings_hash(),
        settings=asdict(s),
    )
    # The whole file, sim_planted included, appears at ``path`` only once complete.
    write_bag(path, draw.features[slide_id], xy, meta, s.dtype, {PLANTED: draw.planted[slide_id]})


def _is_simulated(path: Path) -> bool:
    try:
        return read_extra(path, PLANTED) is not None
    except InputError:
        return False


def read_planted(path: str | os.PathLike) -> np.ndarray:
    """The (n_tiles,) bool mask of planted tiles stored in a simulated feature file."""
    planted = read_extra(path, PLANTED)
    if planted is None:
        raise InputError(f"{path}: not a simulated feature file (no '{PLANTED}' dataset)")
    return planted.astype(bool)


def simulate_cohort(
    out_dir: str | os.PathLike, settings: SimulationSettings = SimulationSettings()
) -> SimulatedCohort:
    """Draw a cohort with a planted signal and write its feature files and tables.

    Parameters
    ----------
    out_dir : folder to write ``features/``, ``clinical.csv``, ``truth.csv`` and
        ``simulation.json`` into (created if needed); simulated slide files already in
        ``features/`` that this draw does not make are removed
    settings : how to draw it; the same settings always give the same files

    Returns
    -------
    SimulatedCohort with the paths, the true risk per patient, the oracle C-index and the
    planted-tile masks per slide.
    """
    draw = draw_cohort(settings)
    out_dir = Path(out_dir)
    features_dir = out_dir / "features"
    for slide_id in draw.features:
        _write_slide(features_dir / f"{slide_id}.h5", draw, slide_id)
    # A rerun into the same folder with fewer patients or slides must not leave old slides
    # behind (a folder of feature files is a cohort); only simulated files are ever removed.
    for path in features_dir.glob("*.h5"):
        if path.stem not in draw.features and _is_simulated(path):
            path.unlink()
    clinical_csv, truth_csv = out_dir / "clinical.csv", out_dir / "truth.csv"
    write_csv(clinical_csv, draw.clinical)
    write_csv(truth_csv, draw.truth, index=True)
    event = draw.clinical.groupby("patient_id")["event"].first()
    write_json(
        out_dir / "simulation.json",
        {
            "settings": asdict(settings),
            "encoder": settings.encoder,
            "oracle_c": draw.oracle_c,
            "censored_fraction": float(1.0 - event.mean()),
        },
    )
    return SimulatedCohort(
        out_dir=out_dir,
        features_dir=features_dir,
        clinical_csv=clinical_csv,
        truth_csv=truth_csv,
        true_risk=draw.truth["true_risk"],
        oracle_c=draw.oracle_c,
        planted=draw.planted,
        settings=settings,
    )
