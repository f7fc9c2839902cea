"""The simulator's patients: true risk from the planted tiles, survival, censoring, covariates.

The true risk (log-hazard) is ``effect`` times a standardised (mean 0, sd 1 over the cohort)
patient quantity that depends on the scenario (see :mod:`.draw`). Survival times follow a
Weibull proportional-hazards model (exponential by default) with median
``median_survival_days`` at zero risk; independent exponential censoring is calibrated
(:func:`~mil_crcrs.simulate.censoring.censoring_rate`) to censor about ``censoring`` of the
patients. Stage (I-IV) follows the true risk with as much noise again; age is independent.
"""

from __future__ import annotations

import numpy as np

from mil_crcrs.data.cohort import DAYS_PER_UNIT
from mil_crcrs.simulate.censoring import censored_fraction, censoring_rate
from mil_crcrs.simulate.settings import SimulationSettings

STAGES = ("I", "II", "III", "IV")
STAGE_QUANTILES = (0.2, 0.5, 0.8)


def _standardise(values: np.ndarray) -> np.ndarray:
    """Per-patient values scaled to mean 0 and standard deviation 1 over the cohort."""
    sd = values.std()
    return (values - values.mean()) / sd if sd > 0 else np.zeros_like(values)


def true_risk(
    s: SimulationSettings, grade: np.ndarray, prev: np.ndarray, cluster: np.ndarray
) -> np.ndarray:
    """(n,) log-hazard of each patient from the rare-tile grade, the prevalence fraction and the
    number of cluster tiles (whose presence is the "cluster" scenario's risk), each (n,)."""
    if s.scenario == "null":
        return np.zeros_like(prev)
    if s.scenario == "cluster":
        return s.effect * _standardise((cluster > 0).astype(np.float64))
    if s.scenario == "rare":
        return s.effect * _standardise(grade)
    if s.scenario == "prevalence":
        return s.effect * _standardise(prev)
    return s.effect * _standardise(_standardise(grade) + _standardise(prev))


def draw_survival(
    s: SimulationSettings, risk: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Follow-up times in days (n,) and events (n,) 0/1 under Weibull PH with log-hazard ``risk``."""
    k = s.weibull_shape
    scale = s.median_survival_days / np.log(2.0) ** (1.0 / k)
    event_time = scale * (rng.exponential(size=risk.shape) * np.exp(-risk)) ** (1.0 / k)
    if s.censoring == 0:
        return event_time, np.ones(risk.shape, dtype=np.int64)
    rate = censoring_rate(lambda r: censored_fraction(r, event_time), s.censoring)
    censor_time = rng.exponential(size=risk.shape) / rate
    return np.minimum(event_time, censor_time), (event_time <= censor_time).astype(np.int64)


def in_time_unit(days: np.ndarray, time_unit: str) -> np.ndarray:
    """Follow-up ``days`` (n,) as written in ``clinical.csv``: whole days (at least 1), or
    months or years to two decimals (at least 0.01)."""
    if time_unit == "days":
        return np.maximum(np.round(days), 1.0)
    return np.maximum(np.round(days / DAYS_PER_UNIT[time_unit], 2), 0.01)


def draw_stage(risk: np.ndarray, effect: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) stage I-IV from the true risk plus as much noise again (correlation about 0.7)."""
    latent = risk + rng.normal(0.0, effect if np.any(risk) else 1.0, risk.shape)
    cuts = np.quantile(latent, STAGE_QUANTILES)
    return np.asarray(STAGES)[np.searchsorted(cuts, latent)]


def draw_age(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) ages in whole years, independent of everything else."""
    return np.clip(np.round(rng.normal(65.0, 10.0, n)), 30, 95).astype(int)
