"""Simulation: cohorts with a planted signal (:mod:`.draw`) and checks of a trained model
against what was planted (:mod:`.checks`)."""

from mil_crcrs.simulate.draw import (
    PLANTED,
    SCENARIOS,
    SIGNAL_DIMS,
    TILE_SIZE_LEVEL0,
    CohortDraw,
    SimulatedCohort,
    SimulationSettings,
    draw_cohort,
    read_planted,
    simulate_cohort,
)

__all__ = [
    "PLANTED",
    "SCENARIOS",
    "SIGNAL_DIMS",
    "TILE_SIZE_LEVEL0",
    "CohortDraw",
    "SimulatedCohort",
    "SimulationSettings",
    "draw_cohort",
    "read_planted",
    "simulate_cohort",
]
