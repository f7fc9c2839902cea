"""The demo cohort's design and outcome: patients, slides, tissue and planted masks, survival.

Each slide's tissue is an irregular blob of cells on the slide's tile grid; its planted
"high-risk" pattern is a compact block of those cells. Its extent (the fraction of a patient's
tissue tiles it covers, 0 to ``max_extent``) is the only thing that drives the simulated
hazard:

    z = (extent - max_extent / 2) / (max_extent / sqrt(12))      (extent ~ Uniform(0, max_extent))
    log-hazard = log_hazard_ratio * z                            (``true_risk``)
    event time ~ Exponential(rate = ln 2 / median_survival_days * exp(true_risk))
    censored at the end of follow-up (``follow_up_days``) or at an independent exponential
    drop-out whose rate makes the expected censored fraction ``censoring``

A simulated stage (1 to 4, standing for I to IV) is a noisy function of ``z``; age is
independent noise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from feature_extraction.synthetic.settings import DemoCohortSettings
from mil_crcrs.simulate.censoring import censoring_rate, expected_censored_fraction

_STAGE_CUTS = (-0.8416, 0.0, 0.8416)  # scipy.stats.norm.ppf([0.2, 0.5, 0.8]): 20/30/30/20 %


def design_cohort(rng: np.random.Generator, settings: DemoCohortSettings) -> pd.DataFrame:
    """One row per slide: ids, tissue and planted tile masks (rows, cols) and their counts."""
    lo, hi = settings.slides_per_patient
    width = max(3, len(str(settings.n_patients)))
    rows = []
    for p in range(settings.n_patients):
        patient_id = f"P{p + 1:0{width}d}"
        target = rng.uniform(0.0, settings.max_extent)
        for s in range(int(rng.integers(lo, hi + 1))):
            tissue = _tissue_layout(rng, settings.slide_tiles)
            slide_target = float(np.clip(target + rng.normal(0.0, 0.03), 0, settings.max_extent))
            n_planted = int(round(slide_target * tissue.sum()))
            planted = _grow_region(rng, tissue, n_planted)
            rows.append(
                {
                    "patient_id": patient_id,
                    "slide_id": f"{patient_id}-S{s + 1}",
                    "tissue": tissue,
                    "planted": planted,
                    "n_tissue": int(tissue.sum()),
                    "n_planted": int(planted.sum()),
                }
            )
    return pd.DataFrame(rows)


def _tissue_layout(rng: np.random.Generator, grid: tuple[int, int]) -> np.ndarray:
    """(rows, cols) bool: an irregular, connected blob of tissue cells (a wobbly ellipse)."""
    n_rows, n_cols = grid
    y = (np.arange(n_rows) + 0.5) / n_rows * 2 - 1
    x = (np.arange(n_cols) + 0.5) / n_cols * 2 - 1
    yy, xx = np.meshgrid(y, x, indexing="ij")
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    a, b = rng.uniform(0.85, 1.15, size=2)
    theta = np.arctan2(v, u)
    wobble = 1.0 + sum(
        rng.uniform(-0.12, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    inside = (u / a) ** 2 + (v / b) ** 2 <= wobble**2
    inside[n_rows // 2, n_cols // 2] = True
    return _connected_to(inside, (n_rows // 2, n_cols // 2))


def _connected_to(mask: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of ``mask`` containing ``start``."""
    out = np.zeros_like(mask)
    stack = [start]
    while stack:
        r, c = stack.pop()
        if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c] and not out[r, c]:
            out[r, c] = True
            stack.extend([(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)])
    return out


def _grow_region(rng: np.random.Generator, tissue: np.ndarray, n_cells: int) -> np.ndarray:
    """(rows, cols) bool: ``n_cells`` connected tissue cells grown from a random seed cell.

    A frontier cell is added with probability proportional to the square of its number of
    neighbours already in the region, which keeps the region compact.
    """
    region = np.zeros_like(tissue)
    if n_cells <= 0:
        return region
    cells = np.argwhere(tissue)
    region[tuple(cells[rng.integers(len(cells))])] = True
    offsets = ((1, 0), (-1, 0), (0, 1), (0, -1))
    for _ in range(n_cells - 1):
        frontier, weights = [], []
        for r, c in np.argwhere(region):
            for dr, dc in offsets:
                rr, cc = r + dr, c + dc
                inside = 0 <= rr < tissue.shape[0] and 0 <= cc < tissue.shape[1]
                if inside and tissue[rr, cc] and not region[rr, cc] and (rr, cc) not in frontier:
                    frontier.append((rr, cc))
        if not frontier:
            break
        for rr, cc in frontier:
            n = sum(
                region[rr + dr, cc + dc]
                for dr, dc in offsets
                if 0 <= rr + dr < tissue.shape[0] and 0 <= cc + dc < tissue.shape[1]
            )
            weights.append(float(n) ** 2)
        p = np.asarray(weights) / np.sum(weights)
        region[frontier[rng.choice(len(frontier), p=p)]] = True
    return region


def simulate_outcome(
    rng: np.random.Generator, extent: np.ndarray, settings: DemoCohortSettings
) -> pd.DataFrame:
    """Per patient: true_risk, time (whole days), event, stage (1-4), age (years).

    ``extent`` is (n_patients,) in [0, max_extent].
    """
    n = len(extent)
    z = (extent - settings.max_extent / 2) / (settings.max_extent / math.sqrt(12.0))
    true_risk = settings.log_hazard_ratio * z
    rate = math.log(2.0) / settings.median_survival_days * np.exp(true_risk)
    event_time = rng.exponential(1.0 / rate)
    mu = censoring_rate(
        lambda r: expected_censored_fraction(r, rate, settings.follow_up_days), settings.censoring
    )
    dropout = rng.exponential(1.0 / mu, size=n) if mu > 0 else np.full(n, np.inf)
    censor_time = np.minimum(dropout, settings.follow_up_days)
    time = np.maximum(np.round(np.minimum(event_time, censor_time)), 1).astype(np.int64)
    event = (event_time <= censor_time).astype(np.int64)
    latent = (z + settings.stage_noise * rng.normal(size=n)) / math.hypot(1.0, settings.stage_noise)
    stage = 1 + np.searchsorted(np.asarray(_STAGE_CUTS), latent)
    age = np.clip(np.round(rng.normal(67.0, 10.0, size=n)), 35, 95).astype(np.int64)
    return pd.DataFrame(
        {"true_risk": true_risk, "time": time, "event": event, "stage": stage, "age": age}
    )
