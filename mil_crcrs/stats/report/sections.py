"""The sections of a survival report for one cohort, one function each.

A cohort's sections are called alike, ``section(parts, cohort, models, settings)``: each reads
the :class:`~mil_crcrs.stats.report.cohorts.Cohort` (its patients, complete cases and usable
horizons) and, where it needs them, the
:class:`~mil_crcrs.stats.report.cohorts.TrainingModels` fitted once on the training cohort, and
adds named tables and captioned figures to the :class:`ReportParts` the report collects
(:func:`analyse_cohort` runs them in the report's order):

- :func:`km_section`: Kaplan-Meier curves of the risk groups, log-rank test, numbers at risk;
- :func:`cox_section`: univariable and multivariable Cox models, proportional hazards, forest;
- :func:`subgroups_section`: hazard ratio of high vs low CRCRS within subgroups;
- :func:`discrimination_section`: Harrell's and Uno's C, time-dependent AUC, Brier score;
- :func:`calibration_section`: calibration of the nomogram model at each horizon;
- :func:`decision_curve_section`: decision curves at one horizon;
- :func:`nomogram_section`: the nomogram itself (training cohort only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from mil_crcrs.figures import to_png
from mil_crcrs.stats import plots
from mil_crcrs.stats.cox import (
    fit_cox,
    proportional_hazards_test,
    subgroup_hazard_ratios,
    univariable_cox,
)
from mil_crcrs.stats.discrimination import brier_grid, evaluate_discrimination
from mil_crcrs.stats.nomogram import build_nomogram, calibration, decision_curve
from mil_crcrs.stats.nomogram_plot import nomogram_figure
from mil_crcrs.stats.report.cohorts import (
    MODEL_BOTH,
    MODEL_CLINICAL,
    MODEL_CRCRS,
    Cohort,
    TrainingModels,
    label_years,
)
from mil_crcrs.stats.report.inputs import usable_horizons
from mil_crcrs.stats.report.settings import ReportSettings
from mil_crcrs.stats.survival import kaplan_meier

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class ReportFigure(NamedTuple):
    """One figure of the report: the section it belongs to, its cohort, caption and PNG."""

    section: str
    cohort: str
    caption: str
    png: bytes


@dataclass
class ReportParts:
    """What the sections have added so far: tables by name, figures in order, warnings.

    Attributes
    ----------
    tables : table name -> its frames, one per cohort, each with a leading ``cohort`` column
    figures : in display order
    notes : warnings for the top of the report
    cohort_rows : one summary row per cohort (the ``cohorts`` table)
    """

    tables: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    figures: list[ReportFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cohort_rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, frame: pd.DataFrame, cohort: str) -> None:
        """Add one cohort's rows of table ``name``."""
        frame = frame.copy()
        frame.insert(0, "cohort", cohort)
        self.tables.setdefault(name, []).append(frame)

    def figure(self, section: str, cohort: str, caption: str, fig: Figure) -> None:
        """Add a matplotlib figure (rendered to PNG now) to ``section``."""
        self.figures.append(ReportFigure(section, cohort, caption, to_png(fig)))

    def merged(self) -> dict[str, pd.DataFrame]:
        """Every table with its cohorts stacked, in the order first added, then ``cohorts``."""
        merged = {
            name: pd.concat(frames, ignore_index=True) for name, frames in self.tables.items()
        }
        merged["cohorts"] = pd.DataFrame(self.cohort_rows)
        return merged


def analyse_cohort(
    parts: ReportParts, cohort: Cohort, models: TrainingModels, settings: ReportSettings
) -> None:
    """Every section of one cohort, in the report's order; the models stay those of training."""
    for section in COHORT_SECTIONS:
        section(parts, cohort, models, settings)


def _designs(cohort: Cohort, models: TrainingModels) -> dict[str, pd.DataFrame]:
    """Each training model's design matrix of the cohort's complete cases."""
    return {m.name: m.design(cohort.complete, cohort.source) for m in models.all}


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def km_section(
    parts: ReportParts, cohort: Cohort, models: TrainingModels, settings: ReportSettings
) -> None:
    """Kaplan-Meier curves by risk group (every patient), medians, log-rank, numbers at risk."""
    upy, table, role = settings.unit_per_year, cohort.table, cohort.role
    ticks = plots.year_ticks(table["time"].max() / upy) * upy
    km = kaplan_meier(table["time"], table["event"], table["risk_group"], ticks)
    parts.add(
        "km_medians",
        km.summary.assign(logrank_statistic=km.logrank_statistic, logrank_p=km.logrank_p),
        role,
    )
    at_risk = km.at_risk.reset_index().assign(years=lambda f: f["time"] / upy)
    parts.add("numbers_at_risk", at_risk, role)
    parts.figure(
        "km",
        role,
        f"{role}: Kaplan-Meier by CRCRS risk group",
        plots.km_figure(km, f"{cohort.title}: CRCRS risk groups", upy),
    )


def cox_section(
    parts: ReportParts, cohort: Cohort, models: TrainingModels, settings: ReportSettings
) -> None:
    """Univariable and multivariable Cox models within the cohort (every patient with the
    model's variables), their Schoenfeld tests and a forest plot (univariable and multivariable
    with the risk group)."""
    table, src, role = cohort.table, cohort.source, cohort.role
    encoding, covariates = models.encoding, list(settings.covariates)
    uni = univariable_cox(table, encoding, src)
    multi = [
        fit_cox(
            table,
            encoding.subset(["crcrs", *covariates]),
            "multivariable (CRCRS continuous)",
            src,
        ),
        fit_cox(
            table,
            encoding.subset(["risk_group", *covariates]),
            "multivariable (risk group)",
            src,
        ),
    ]
    cox = pd.concat([uni, *(m.table() for m in multi)], ignore_index=True)
    parts.add("cox", cox, role)
    parts.add(
        "proportional_hazards",
        pd.concat([proportional_hazards_test(m) for m in multi], ignore_index=True),
        role,
    )
    forest = _forest_rows(
        cox[(cox["variable"] != "crcrs") & (cox["model"] != "multivariable (CRCRS continuous)")]
    )
    parts.figure(
        "cox",
        role,
        f"{role}: hazard ratios, univariable and multivariable (risk group)",
        plots.forest_figure(forest, f"{cohort.title}: Cox models"),
    )


def _forest_rows(cox: pd.DataFrame) -> pd.DataFrame:
    label = np.where(
        cox["level"].isna(),
        cox["variable"],
        cox["variable"] + ": " + cox["level"].astype(str) + " vs " + cox["reference"].astype(str),
    )
    return cox.assign(label=label)


def subgroups_section(
    parts: ReportParts, cohort: Cohort, models: TrainingModels, settings: ReportSettings
) -> None:
    """Hazard ratio of high vs low CRCRS within each subgroup of each covariate."""
    role = cohort.role
    sub_enc = models.encoding.subset(["risk_group", *settings.covariates])
    subgroups = subgroup_hazard_ratios(cohort.table, sub_enc, "risk_group", source=cohort.source)
    parts.add("subgroups", subgroups, role)
    labels = (
        subgroups["covariate"]
        + ": "
        + subgroups["subgroup"]
        + " (n="
        + subgroups["n"].astype(str)
        + ")"
    )
    parts.figure(
        "subgroups",
        role,
        f"{role}: hazard ratio of high vs low CRCRS within subgroups",
        plots.forest_figure(
            subgroups.assign(label=labels),
            f"{cohort.title}: high vs low CRCRS by subgroup",
        ),
    )


def discrimination_section(
    parts: ReportParts, cohort: Cohort, models: TrainingModels, settings: ReportSettings
) -> None:
    """C-indices, time-dependent AUC and integrated Brier score of the training-fitted models,
    with bootstrap CIs and the differences of CRCRS + clinical from each alone."""
    upy, cc, role, kept = settings.unit_per_year, cohort.complete, cohort.role, cohort.horizons
    designs = _designs(cohort, models)
    grid = brier_grid(cc["time"], max(kept))
    risk = {
        MODEL_CRCRS: cc["crcrs"].to_numpy(float),
        MODEL_CLINICAL: models.clinical.linear_predictor(designs[MODEL_CLINICAL]),
        MODEL_BOTH: models.both.linear_predictor(designs[MODEL_BOTH]),
    }
    survival = {m.name: m.survival(designs[m.name], grid) for m in models.all}
    disc = evaluate_discrimination(
        cc["time"],
        cc["event"],
        risk,
        kept,
        survival=survival,
        grid=grid,
        comparisons=[(MODEL_BOTH, MODEL_CLINICAL), (MODEL_BOTH, MODEL_CRCRS)],
        n_bootstrap=settings.n_bootstrap,
        seed=settings.seed,
    )
    parts.add(
        "discrimination", disc.metrics.assign(horizon_years=disc.metrics["horizon"] / upy), role
    )
    parts.add(
        "discrimination_difference",
        disc.differences.assign(horizon_years=disc.differences["horizon"] / upy),
        role,
    )
    parts.add("time_auc", disc.auc_curve.assign(years=disc.auc_curve["time"] / upy), role)
    parts.figure(
        "discrimination",
        role,
        f"{role}: time-dependent AUC",
        plots.auc_figure(
            disc.auc_curve,
            disc.metrics[disc.metrics["metric"] == "auc"],
            upy,
            f"{cohort.title}: time-dependent AUC",
        ),
    )


def calibration_section(
    parts: ReportParts, cohort: Cohort, models: TrainingModels, settings: ReportSettings
) -> None:
    """Predicted (nomogram model) vs Kaplan-Meier survival by quantile group, per horizon."""
    upy, cc, role = settings.unit_per_year, cohort.complete, cohort.role
    surv_h = models.both.survival(_designs(cohort, models)[MODEL_BOTH], cohort.horizons)
    calib = []
    for j, h in enumerate(cohort.horizons):
        c = calibration(surv_h[:, j], cc["time"], cc["event"], h, settings.calibration_groups)
        calib.append(c.assign(horizon=h, horizon_years=h / upy, horizon_label=label_years(h / upy)))
    calib = pd.concat(calib, ignore_index=True)
    parts.add("calibration", calib, role)
    parts.figure(
        "calibration",
        role,
        f"{role}: calibration of the nomogram",
        plots.calibration_figure(calib, f"{cohort.title}: calibration (CRCRS + clinical)"),
    )


def decision_curve_section(
    parts: ReportParts, cohort: Cohort, models: TrainingModels, settings: ReportSettings
) -> None:
    """Decision curves of the three models at one horizon: the one asked for, else the middle
    training horizon; a note instead when the cohort cannot support it."""
    upy, cc, role = settings.unit_per_year, cohort.complete, cohort.role
    if settings.dca_horizon_years is not None:
        dca_h = settings.dca_horizon_years * upy
    else:
        dca_h = models.horizons[(len(models.horizons) - 1) // 2]
    ok, why = usable_horizons(
        cc["time"], cc["event"], [dca_h], settings.min_events, settings.time_unit
    )
    if not ok:
        parts.notes.append(
            f"{cohort.source}: no decision curves at {label_years(dca_h / upy)}: {why[0]}"
        )
        return
    designs = _designs(cohort, models)
    probs = {m.name: 1.0 - m.survival(designs[m.name], [dca_h])[:, 0] for m in models.all}
    dca = decision_curve(probs, cc["time"], cc["event"], dca_h)
    parts.add("decision_curve", dca.assign(horizon=dca_h, horizon_years=dca_h / upy), role)
    parts.figure(
        "dca",
        role,
        f"{role}: decision curves at {label_years(dca_h / upy)}",
        plots.decision_curve_figure(
            dca,
            f"{cohort.title}: decision curves, {label_years(dca_h / upy)} death",
        ),
    )


def nomogram_section(parts: ReportParts, models: TrainingModels, settings: ReportSettings) -> None:
    """The nomogram of CRCRS + covariates (training cohort): figure, points, survival, model."""
    upy = settings.unit_per_year
    nomo = build_nomogram(models.both, models.horizons)
    labels = [label_years(h / upy) for h in models.horizons]
    parts.figure(
        "nomogram",
        "training",
        "nomogram of CRCRS + clinical covariates (training cohort)",
        nomogram_figure(nomo, labels, "Nomogram: CRCRS + clinical (training cohort)"),
    )
    parts.add("nomogram_points", nomo.points_table(), "training")
    parts.add(
        "nomogram_survival",
        nomo.survival_table().assign(horizon_years=lambda f: f["horizon"] / upy),
        "training",
    )
    parts.add("cox_nomogram", models.both.table(), "training")


#: The sections of each cohort, in the order of the report.
COHORT_SECTIONS = (
    km_section,
    cox_section,
    subgroups_section,
    discrimination_section,
    calibration_section,
    decision_curve_section,
)
