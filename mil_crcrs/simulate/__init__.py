"""Simulation: cohorts with a planted signal, and the planted truth read back.

- :mod:`.settings`: :class:`SimulationSettings`, how a cohort is drawn;
- :mod:`.world`: the tile phenotypes in feature space and the tiles on a slide;
- :mod:`.outcome`: true risk, survival, censoring and covariates of the patients;
- :mod:`.censoring`: the drop-out rate that censors a chosen fraction (also used by the demo's
  semi-synthetic cohort);
- :mod:`.draw`: :func:`draw_cohort`, a cohort in memory;
- :mod:`.write`: :func:`simulate_cohort`, a cohort on disk;
- :mod:`.planted`: :func:`read_planted`, the planted truth of a simulated feature file or of a
  demo slide.

Whether a model's attention finds the planted tiles is :mod:`mil_crcrs.attention_checks`.
"""

from mil_crcrs.simulate.censoring import (
    censored_fraction,
    censoring_rate,
    expected_censored_fraction,
)
from mil_crcrs.simulate.draw import CohortDraw, draw_cohort
from mil_crcrs.simulate.planted import PLANTED, PlantedRegion, read_planted
from mil_crcrs.simulate.settings import SCENARIOS, SimulationSettings
from mil_crcrs.simulate.world import SIGNAL_DIMS, TILE_SIZE_LEVEL0
from mil_crcrs.simulate.write import SimulatedCohort, simulate_cohort

__all__ = [
    "PLANTED",
    "SCENARIOS",
    "SIGNAL_DIMS",
    "TILE_SIZE_LEVEL0",
    "CohortDraw",
    "PlantedRegion",
    "SimulatedCohort",
    "SimulationSettings",
    "censored_fraction",
    "censoring_rate",
    "draw_cohort",
    "expected_censored_fraction",
    "read_planted",
    "simulate_cohort",
]
