"""The survival report of a CRCRS: one self-contained HTML file plus its numbers as CSV and JSON.

:func:`build_report` joins a predictions CSV (``patient_id, crcrs, risk_group`` [, ``time,
event, fold``], as ``crcrs predict`` writes it) with a clinical table on ``patient_id`` and
writes, for the training cohort and optionally an external validation cohort:

- Kaplan-Meier curves of the high and low risk groups with the log-rank p, the medians and the
  numbers at risk;
- univariable and multivariable Cox models (CRCRS continuous, and high vs low) with the
  covariates, a Schoenfeld test of proportional hazards and forest plots; subgroup hazard ratios;
- Harrell's and Uno's C, the time-dependent AUC at each horizon and the integrated Brier score
  of CRCRS, of the clinical covariates and of both, with bootstrap CIs and the difference
  CRCRS + clinical minus clinical;
- a nomogram of CRCRS + covariates fitted on the training cohort, its calibration at each
  horizon and decision curves at one horizon, on every cohort.

Rules (see also :mod:`mil_crcrs.stats.covariates` for covariate coding and reference levels):

- The outcome comes from the clinical table; if that has no time and event columns, from the
  predictions. Both are in ``settings.time_unit``; horizons are given in years.
- Patients in the predictions without a clinical row are dropped with a warning; no patient in
  common is an error.
- Models with covariates use the patients with every covariate known (complete cases);
  Kaplan-Meier curves use every patient.
- A horizon needs, among those complete cases, at least ``min_events`` events by then and at
  least ``min_events`` patients followed beyond it. Horizons that fail are dropped with a warning
  in the report; if none is left for a cohort, that is an error. Validation horizons must also
  be usable in training (the nomogram's baseline hazard is estimated there).
- Warnings are shown at the top of the report, saved in ``results.json`` and raised as
  :class:`~mil_crcrs.data.cohort.DataWarning`.

Where each part lives: :mod:`~mil_crcrs.stats.report.settings` (the settings),
:mod:`~mil_crcrs.stats.report.inputs` (predictions joined with the clinical table),
:mod:`~mil_crcrs.stats.report.cohorts` (complete cases, horizons, the training models),
:mod:`~mil_crcrs.stats.report.sections` (one function per section),
:mod:`~mil_crcrs.stats.report.html` (the page); this module runs them and writes the files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mil_crcrs._version import __version__
from mil_crcrs.atomic import output_dir, write_csv, write_json
from mil_crcrs.data.cohort import DataWarning
from mil_crcrs.errors import InputError
from mil_crcrs.stats.report.associate import associate_section
from mil_crcrs.stats.report.cohorts import cohort_row, fit_training_models, prepare_cohort
from mil_crcrs.stats.report.html import IMAGE_TYPES, render_html
from mil_crcrs.stats.report.inputs import load_patients
from mil_crcrs.stats.report.phenotypes import phenotype_section
from mil_crcrs.stats.report.sections import (
    ReportFigure,
    ReportParts,
    analyse_cohort,
    nomogram_section,
)
from mil_crcrs.stats.report.settings import ReportSettings

__all__ = ["Report", "build_report"]


@dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote.

    Attributes
    ----------
    html : path of the HTML report
    out_dir : folder holding it, the CSV tables, ``results.json``, ``settings.json`` and
        ``figures/``
    tables : every table of the report by name (each with a ``cohort`` column)
    warnings : what was dropped or could not be computed
    """

    html: Path
    out_dir: Path
    tables: dict[str, pd.DataFrame]
    warnings: tuple[str, ...]


#: A table given by its path (CSV, TSV or Excel) or as a data frame.
TableInput = str | os.PathLike | pd.DataFrame


def build_report(
    predictions: TableInput,
    clinical: TableInput,
    out_dir: str | os.PathLike,
    settings: ReportSettings,
    validation_predictions: TableInput | None = None,
    validation_clinical: TableInput | None = None,
    extra_images: Sequence[str | os.PathLike] = (),
    associate_dir: str | os.PathLike | None = None,
    phenotypes: Sequence[str | os.PathLike] = (),
) -> Report:
    """Compute every statistic and write ``report.html``, the tables and the figures.

    Parameters
    ----------
    predictions, clinical : the training cohort (paths or data frames)
    out_dir : output folder, replaced whole when the report is complete (a failed or killed
        run leaves the previous report as it was; files a user put there are kept)
    settings : see :class:`ReportSettings`
    validation_predictions, validation_clinical : an external cohort, both or neither
    extra_images : image files (PNG, JPEG, SVG, GIF) embedded at the end, e.g. heatmaps
    associate_dir : a ``crcrs associate`` output folder, shown as the omics section
    phenotypes : folders written by ``crcrs phenotypes``, shown in a "Phenotypes" section
        (:mod:`mil_crcrs.stats.report.phenotypes`)

    Returns
    -------
    Report
    """
    if (validation_predictions is None) != (validation_clinical is None):
        raise InputError(
            "validation predictions and validation clinical table go together: give both or neither"
        )
    images = _check_images(extra_images)
    sections = [associate_section(associate_dir)] if associate_dir is not None else []
    inputs = [("training", predictions, clinical)]
    if validation_predictions is not None:
        inputs.append(("validation", validation_predictions, validation_clinical))
    parts = ReportParts()
    loaded = []
    for role, pred, clin in inputs:
        table, info, notes = load_patients(pred, clin, settings)
        parts.notes += notes
        loaded.append((role, table, info))

    _, train_table, train_info = loaded[0]
    models = fit_training_models(train_table, train_info["source"], settings)
    for role, table, info in loaded:
        cohort, notes = prepare_cohort(role, table, info["source"], settings, models.horizons)
        parts.notes += notes
        parts.cohort_rows.append(cohort_row(cohort, info, settings))
        analyse_cohort(parts, cohort, models, settings)
    nomogram_section(parts, models, settings)
    phenotype_section(parts, phenotypes)

    for note in parts.notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    return _write(
        Path(out_dir), settings, parts.merged(), parts.figures, images, tuple(parts.notes), sections
    )


def _check_images(extra_images: Sequence[str | os.PathLike]) -> list[Path]:
    images = [Path(p) for p in extra_images]
    for p in images:
        if not p.is_file():
            raise InputError(f"{p}: no such image file")
        if p.suffix.lower() not in IMAGE_TYPES:
            raise InputError(
                f"{p}: not an image type the report can embed ({', '.join(IMAGE_TYPES)})"
            )
    return images


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(pd.notna(frame), None)
    return clean.to_dict(orient="records")


def _settings_dict(settings: ReportSettings) -> dict[str, Any]:
    d = asdict(settings)
    d["version"] = __version__
    return d


def _write(
    out: Path,
    settings: ReportSettings,
    tables: dict[str, pd.DataFrame],
    figures: list[ReportFigure],
    images: list[Path],
    notes: tuple[str, ...],
    sections: list[str],
) -> Report:
    page = render_html(settings, tables, figures, images, notes, sections)
    with output_dir(out) as tmp:  # all of one run, or the previous run's untouched
        for name, frame in tables.items():
            write_csv(tmp / f"{name}.csv", frame)
        write_json(tmp / "settings.json", _settings_dict(settings))
        write_json(
            tmp / "results.json",
            {
                "version": __version__,
                "time_unit": settings.time_unit,
                "warnings": list(notes),
                "tables": {name: _records(frame) for name, frame in tables.items()},
            },
        )
        (tmp / "figures").mkdir()
        for i, (section, cohort, _, png) in enumerate(figures):
            (tmp / "figures" / f"{i:02d}_{section}_{cohort}.png").write_bytes(png)
        (tmp / "report.html").write_text(page, encoding="utf-8")
    return Report(html=out / "report.html", out_dir=out, tables=tables, warnings=notes)
