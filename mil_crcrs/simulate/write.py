"""Simulated cohorts on disk: :func:`simulate_cohort` draws a cohort (:mod:`.draw`) and writes it.

Outputs of :func:`simulate_cohort` in ``out_dir``:

- ``features/<slide>.h5`` in our format (see :mod:`mil_crcrs.data.store`), with coords on a
  tile grid and an extra dataset ``sim_planted`` (n_tiles,) bool marking the planted tiles of
  the scenario's phenotype(s), which the feature reader ignores (:func:`~mil_crcrs.simulate.planted.read_planted` reads it);
- ``clinical.csv``: ``patient_id``, ``slide_id``, ``time``, ``event`` and two covariates,
  ``stage`` (I-IV, correlated with the true risk but not identical) and ``age`` (independent);
- ``truth.csv``: ``patient_id``, ``true_risk``, ``rare_grade``, ``rare_fraction``,
  ``prevalence_fraction``, ``cluster_tiles``;
- ``simulation.json``: the settings and the oracle C-index.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mil_crcrs.atomic import write_csv, write_json
from mil_crcrs.data.store import FeatureMeta, read_extra, write_bag
from mil_crcrs.errors import InputError
from mil_crcrs.simulate.draw import CohortDraw, draw_cohort
from mil_crcrs.simulate.planted import PLANTED
from mil_crcrs.simulate.settings import SimulationSettings
from mil_crcrs.simulate.world import (
    MARGIN_LEVEL0,
    SLIDE_MPP,
    TARGET_MPP,
    TILE_SIZE_LEVEL0,
    TILE_SIZE_PX,
)


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
