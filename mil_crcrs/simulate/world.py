"""The simulator's tile world: tile phenotypes in feature space and tiles on a slide.

A patient's tiles are drawn from a small "world" of tile phenotypes in ``dim`` dimensions (see
:mod:`.draw` for which the scenarios plant):

- **background** tiles: one of four tissue clusters (the patient's mix of them varies, as
  nuisance), plus unit Gaussian noise;
- **rare** tiles: background tiles whose coordinate along a hidden signal direction is
  replaced by plus or minus (a coin flip per tile) the patient's rare-tile grade, so that they
  keep the background mean;
- **prevalence** tiles: a separate cluster whose centre is away from the background.

The world (cluster centres, rotation) depends only on ``world_seed`` and ``dim``, so cohorts
drawn with different ``seed`` share one "encoder" and can serve as training and external
validation cohorts.

Feature scales: real foundation-model features are far from isotropic (some dimensions vary
100 times more than others, most have non-zero means). ``scale_range`` > 1 multiplies each
output dimension by a scale drawn log-uniformly over a ``scale_range``-fold range (geometric
mean 1), and ``offset_sd`` > 0 adds a per-dimension offset of ``offset_sd`` times that
dimension's scale times a standard normal draw; both belong to the world, so they change
nothing about the signal but its units.

Tiles lie on a grid of ``TILE_SIZE_LEVEL0``-pixel cells (224 px at 0.5 um/px of a 0.25 um/px
slide) in a roughly round piece of tissue, with planted tiles in focal regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mil_crcrs.simulate.settings import SimulationSettings

SIGNAL_DIMS = 1  # the rare phenotype lives along this many (hidden) dimensions
RARE_GRADE = (4.0, 7.0)  # rare tiles' distance from 0 along the signal (background: N(0, 1))
RARE_JITTER = 0.3  # noise around a rare tile's +-grade
PREVALENCE_SHIFT = 3.0  # distance of the prevalence cluster's centre from the origin
N_CLUSTERS = 4  # background tissue clusters
CLUSTER_SCALE = 0.5  # per-dimension spread of the background cluster centres
TILE_SIZE_PX = 224
SLIDE_MPP, TARGET_MPP = 0.25, 0.5
TILE_SIZE_LEVEL0 = int(TILE_SIZE_PX * TARGET_MPP / SLIDE_MPP)
MARGIN_LEVEL0 = 2 * TILE_SIZE_LEVEL0  # empty slide border around the tissue


@dataclass(frozen=True)
class World:
    """The tile phenotypes of one "encoder" (see the module docstring)."""

    rotation: np.ndarray  # (dim, dim) orthogonal, applied to every tile
    centres: np.ndarray  # (N_CLUSTERS, dim) background cluster centres
    prevalence_centre: np.ndarray  # (dim,)


def make_world(dim: int, world_seed: int) -> World:
    """The world of ``dim``-dimensional features drawn from ``world_seed`` (and ``dim``) alone."""
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
    return World(rotation=rotation, centres=centres, prevalence_centre=prevalence_centre)


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


def draw_slide(
    n: int,
    weights: np.ndarray,
    f_rare: float,
    grade: float,
    f_prev: float,
    world: World,
    rng: np.random.Generator,
    n_cluster: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tiles of one slide.

    Parameters
    ----------
    n : tiles on the slide
    weights : (N_CLUSTERS,) the patient's mix of background clusters
    f_rare, grade : the patient's rare-tile fraction and grade (``f_rare`` 0: no rare tiles)
    f_prev : the patient's prevalence-tile fraction
    world : the tile phenotypes
    rng : draws the tiles
    n_cluster : with ``f_rare`` 0, tiles of the rare phenotype planted as one cluster of
        adjacent tiles (the "cluster" scenario; 0 = none)

    Returns
    -------
    features : (n, dim) float64, before :func:`feature_scales`
    grid : (n, 2) int64 (col, row) cells
    rare, prev : (n,) bool masks of the rare and the prevalence tiles
    """
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


def feature_scales(s: SimulationSettings) -> tuple[np.ndarray, np.ndarray]:
    """(dim,) per-dimension scale and offset of the world's features (see the module docstring);
    ones and zeros unless ``scale_range`` > 1 or ``offset_sd`` > 0."""
    rng = np.random.default_rng([s.world_seed, s.dim, 1])
    half = np.log(s.scale_range) / 2.0
    scale = np.exp(rng.uniform(-half, half, s.dim)) if s.scale_range > 1.0 else np.ones(s.dim)
    offset = s.offset_sd * scale * rng.standard_normal(s.dim)
    return scale, offset
