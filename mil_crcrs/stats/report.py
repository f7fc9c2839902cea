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
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mil_crcrs._version import __version__
from mil_crcrs.atomic import atomic_path, write_csv, write_json
from mil_crcrs.data.cohort import (
    DAYS_PER_UNIT,
    TIME_UNITS,
    Columns,
    DataWarning,
    read_cohort,
    read_table,
    validate_outcome,
)
from mil_crcrs.errors import InputError
from mil_crcrs.figures import to_png
from mil_crcrs.stats.covariates import make_encoding
from mil_crcrs.stats.cox import (
    fit_cox,
    proportional_hazards_test,
    subgroup_hazard_ratios,
    univariable_cox,
)
from mil_crcrs.stats.discrimination import brier_grid, evaluate_discrimination
from mil_crcrs.stats.nomogram import build_nomogram, calibration, decision_curve
from mil_crcrs.stats.survival import kaplan_meier, median_follow_up

RESERVED = ("patient_id", "crcrs", "risk_group", "time", "event", "fold")
MODEL_CRCRS, MODEL_CLINICAL, MODEL_BOTH = "CRCRS", "clinical", "CRCRS + clinical"
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".gif": "image/gif",
}


@dataclass(frozen=True)
class ReportSettings:
    """Everything that decides the report's numbers; saved as ``settings.json``.

    Attributes
    ----------
    covariates : clinical columns for the Cox models and the nomogram (at least one)
    categorical : covariates to treat as categorical although their values are numbers
    horizons_years : horizons of the AUC, nomogram and calibration, in years
    time_unit : unit of the time columns ("days", "months", "years")
    columns : column names of the clinical table
    n_bootstrap : bootstrap resamples for the CIs of the discrimination metrics
    seed : seed of the bootstrap
    min_events : a horizon needs this many events by it and patients followed beyond it
    calibration_groups : quantile groups of predicted survival in the calibration plots
    dca_horizon_years : horizon of the decision curves; None = the middle usable horizon
    title : heading of the HTML page
    """

    covariates: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    horizons_years: tuple[float, ...] = (1.0, 3.0, 5.0)
    time_unit: str = "days"
    columns: Columns = field(default_factory=Columns)
    n_bootstrap: int = 200
    seed: int = 0
    min_events: int = 5
    calibration_groups: int = 5
    dca_horizon_years: float | None = None
    title: str = "CRCRS survival report"

    def __post_init__(self) -> None:
        if not self.covariates:
            raise InputError("at least one clinical covariate is needed (--covariates)")
        for name in self.covariates:
            if name in RESERVED:
                raise InputError(f"'{name}' is not a clinical covariate (it is reserved)")
        dup = {c for c in self.covariates if self.covariates.count(c) > 1}
        if dup:
            raise InputError(f"covariate(s) given twice: {', '.join(sorted(dup))}")
        stray = [c for c in self.categorical if c not in self.covariates]
        if stray:
            raise InputError(f"categorical covariate(s) {', '.join(stray)} are not in --covariates")
        if self.time_unit not in TIME_UNITS:
            raise InputError(
                f"time unit must be one of {', '.join(TIME_UNITS)}, got {self.time_unit!r}"
            )
        if not self.horizons_years or any(not h > 0 for h in self.horizons_years):
            raise InputError(f"horizons must be positive years, got {self.horizons_years}")
        if self.n_bootstrap < 0:
            raise InputError(
                f"the number of bootstrap resamples must be >= 0, got {self.n_bootstrap}"
            )
        if self.min_events < 1:
            raise InputError(f"min_events must be >= 1, got {self.min_events}")
        if self.calibration_groups < 2:
            raise InputError(f"calibration needs >= 2 groups, got {self.calibration_groups}")
        if self.dca_horizon_years is not None and not self.dca_horizon_years > 0:
            raise InputError(
                f"the decision-curve horizon must be positive, got {self.dca_horizon_years}"
            )

    @property
    def unit_per_year(self) -> float:
        """Time units in one year (365.25 for days)."""
        return DAYS_PER_UNIT["years"] / DAYS_PER_UNIT[self.time_unit]


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


# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------


def read_predictions(
    path: str | os.PathLike | pd.DataFrame, id_column: str = "patient_id"
) -> pd.DataFrame:
    """Read and check a predictions table; returns it indexed by ``patient_id`` (str).

    Required columns: the patient id (``id_column``, as ``crcrs predict`` keeps the table's own
    name for it, e.g. ``case_id``; ``patient_id`` is accepted too), ``crcrs`` (finite numbers),
    ``risk_group`` ("high" or "low"); ``time`` and ``event`` are checked when present.
    """
    if isinstance(path, pd.DataFrame):
        table, source = path.reset_index(drop=True), "<predictions>"
    else:
        table, source = read_table(path), str(path)
    if id_column not in table.columns and "patient_id" in table.columns:
        id_column = "patient_id"
    if id_column != "patient_id":
        table = table.drop(columns=["patient_id"], errors="ignore")
        table = table.rename(columns={id_column: "patient_id"})
    missing = [c for c in ("patient_id", "crcrs", "risk_group") if c not in table.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(map(repr, missing))} of a predictions "
            f"table (it has {', '.join(map(str, table.columns))})"
        )
    crcrs = pd.to_numeric(table["crcrs"], errors="coerce")
    bad = ~np.isfinite(crcrs.to_numpy(dtype=float))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{source}, line {i + 2}: column 'crcrs' must be a finite number, "
            f"got {table['crcrs'].iloc[i]!r}"
        )
    group = table["risk_group"].astype(str).str.strip().str.lower()
    bad = ~group.isin(["high", "low"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"{source}, line {i + 2}: column 'risk_group' must be 'high' or 'low', "
            f"got {table['risk_group'].iloc[i]!r}"
        )
    pid = table["patient_id"].astype(str)
    dup = pid.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"{source}, line {i + 2}: duplicate patient_id '{pid.iloc[i]}'")
    if "time" in table.columns and "event" in table.columns:
        table = validate_outcome(table, "time", "event", source)
    out = table.assign(patient_id=pid, crcrs=crcrs.astype(float), risk_group=group)
    return out.set_index("patient_id")


def load_patients(
    predictions: str | os.PathLike | pd.DataFrame,
    clinical: str | os.PathLike | pd.DataFrame,
    settings: ReportSettings,
) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    """Join predictions and clinical table into one patient table.

    Returns
    -------
    table : indexed by patient_id, with ``time, event, crcrs, risk_group`` and the covariates
    info : ``source``, ``n_predictions``, ``n_clinical``
    notes : warnings for the report
    """
    pred = read_predictions(predictions, settings.columns.patient)
    clin = read_cohort(clinical, settings.columns, settings.time_unit, require_outcome=False)
    pred_src = "<predictions>" if isinstance(predictions, pd.DataFrame) else str(predictions)
    source = clin.source
    common = [p for p in pred.index if p in clin.patients.index]
    if not common:
        raise InputError(
            f"{pred_src} and {source} have no patient in common (e.g. "
            f"'{pred.index[0]}' vs '{clin.patients.index[0]}'; is --patient-col right?)"
        )
    notes = []
    if len(common) < len(pred):
        notes.append(
            f"{source}: {len(pred) - len(common)} of {len(pred)} patients in "
            f"{pred_src} have no clinical row and were left out"
        )
    patients = clin.patients.loc[common]
    if clin.has_outcome:
        outcome = patients[["time", "event"]]
    elif "time" in pred.columns and "event" in pred.columns:
        outcome = pred.loc[common, ["time", "event"]]
        source = pred_src
    else:
        raise InputError(f"neither {source} nor {pred_src} has time and event columns")
    table = pd.concat(
        [
            outcome.astype({"time": float, "event": int}),
            pred.loc[common, ["crcrs", "risk_group"]],
            patients[[c for c in patients.columns if c in settings.covariates]],
        ],
        axis=1,
    )
    table.index.name = "patient_id"
    if table["event"].sum() == 0:
        raise InputError(f"{source}: no events among the {len(table)} patients with predictions")
    info = {
        "source": source,
        "predictions": pred_src,
        "n_predictions": len(pred),
        "n_clinical": len(clin.patients),
    }
    return table, info, notes


def usable_horizons(
    time: np.ndarray,
    event: np.ndarray,
    horizons: Sequence[float],
    min_events: int,
    unit: str = "",
) -> tuple[list[float], list[str]]:
    """Split horizons into usable ones and reasons for the others (see the module docstring)."""
    time = np.asarray(time, float)
    event = np.asarray(event, int)
    kept, reasons = [], []
    for h in horizons:
        n_events = int(((time <= h) & (event == 1)).sum())
        beyond = int((time > h).sum())
        if n_events < min_events:
            reasons.append(f"only {n_events} event(s) by then (need {min_events})")
        elif beyond < min_events:
            reasons.append(
                f"only {beyond} patient(s) followed beyond it (need {min_events}); "
                f"the longest follow-up is {time.max():g} {unit}".rstrip()
            )
        else:
            kept.append(float(h))
            continue
    return kept, reasons


# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------


def _label_years(h_years: float) -> str:
    return f"{h_years:g}-year"


def _with_cohort(frame: pd.DataFrame, cohort: str) -> pd.DataFrame:
    frame = frame.copy()
    frame.insert(0, "cohort", cohort)
    return frame


def _forest_rows(cox: pd.DataFrame) -> pd.DataFrame:
    label = np.where(
        cox["level"].isna(),
        cox["variable"],
        cox["variable"] + ": " + cox["level"].astype(str) + " vs " + cox["reference"].astype(str),
    )
    return cox.assign(label=label)


def build_report(
    predictions: str | os.PathLike | pd.DataFrame,
    clinical: str | os.PathLike | pd.DataFrame,
    out_dir: str | os.PathLike,
    settings: ReportSettings,
    validation_predictions: str | os.PathLike | pd.DataFrame | None = None,
    validation_clinical: str | os.PathLike | pd.DataFrame | None = None,
    extra_images: Sequence[str | os.PathLike] = (),
) -> Report:
    """Compute every statistic and write ``report.html``, the tables and the figures.

    Parameters
    ----------
    predictions, clinical : the training cohort (paths or data frames)
    out_dir : output folder (created; files in it are replaced atomically)
    settings : see :class:`ReportSettings`
    validation_predictions, validation_clinical : an external cohort, both or neither
    extra_images : image files (PNG, JPEG, SVG, GIF) embedded at the end, e.g. heatmaps

    Returns
    -------
    Report
    """
    from mil_crcrs.stats import plots
    from mil_crcrs.stats.nomogram_plot import nomogram_figure

    if (validation_predictions is None) != (validation_clinical is None):
        raise InputError(
            "validation predictions and validation clinical table go together: give both or neither"
        )
    images = [Path(p) for p in extra_images]
    for p in images:
        if not p.is_file():
            raise InputError(f"{p}: no such image file")
        if p.suffix.lower() not in IMAGE_TYPES:
            raise InputError(
                f"{p}: not an image type the report can embed ({', '.join(IMAGE_TYPES)})"
            )

    notes: list[str] = []
    cohorts: list[tuple[str, pd.DataFrame, dict[str, Any]]] = []
    inputs = [("training", predictions, clinical)]
    if validation_predictions is not None:
        inputs.append(("validation", validation_predictions, validation_clinical))
    for role, pred, clin in inputs:
        table, info, more = load_patients(pred, clin, settings)
        notes += more
        cohorts.append((role, table, info))

    covariates = list(settings.covariates)
    train_table, train_info = cohorts[0][1], cohorts[0][2]
    encoding = make_encoding(
        train_table,
        ["crcrs", "risk_group", *covariates],
        settings.categorical,
        train_info["source"],
    )
    upy = settings.unit_per_year
    wanted = [h * upy for h in settings.horizons_years]

    # Models fitted once, on the training cohort.
    train_cc = train_table.dropna(subset=covariates)
    src = train_info["source"]
    m_crcrs = fit_cox(train_cc, encoding.subset(["crcrs"]), MODEL_CRCRS, src)
    m_clinical = fit_cox(train_cc, encoding.subset(covariates), MODEL_CLINICAL, src)
    m_both = fit_cox(train_cc, encoding.subset(["crcrs", *covariates]), MODEL_BOTH, src)
    models = (m_crcrs, m_clinical, m_both)
    train_horizons, _ = usable_horizons(
        train_cc["time"], train_cc["event"], wanted, settings.min_events
    )

    tables: dict[str, list[pd.DataFrame]] = {}
    figures: list[tuple[str, str, str, bytes]] = []  # (section, cohort, caption, png)
    cohort_rows = []

    def add(name: str, frame: pd.DataFrame, role: str) -> None:
        tables.setdefault(name, []).append(_with_cohort(frame, role))

    def figure(section: str, cohort: str, caption: str, fig) -> None:
        figures.append((section, cohort, caption, to_png(fig)))

    for role, table, info in cohorts:
        src = info["source"]
        cc = table.dropna(subset=covariates)
        if len(cc) < len(table):
            notes.append(
                f"{src}: {len(table) - len(cc)} of {len(table)} patients lack a value of "
                f"{', '.join(covariates)} and are left out of the Cox models with "
                "covariates, the nomogram, discrimination, calibration and decision curves"
            )
        kept, reasons = usable_horizons(
            cc["time"], cc["event"], wanted, settings.min_events, settings.time_unit
        )
        for h, why in zip([h for h in wanted if h not in kept], reasons, strict=True):
            notes.append(f"{src}: the {_label_years(h / upy)} horizon was dropped: {why}")
        if role != "training":
            lost = [h for h in kept if h not in train_horizons]
            for h in lost:
                notes.append(
                    f"{src}: the {_label_years(h / upy)} horizon was dropped: it is not "
                    "usable in the training cohort, where the nomogram is fitted"
                )
            kept = [h for h in kept if h in train_horizons]
        if not kept:
            raise InputError(
                f"{src}: no usable horizon among {', '.join(map(str, settings.horizons_years))} "
                f"years (each needs {settings.min_events} events by it and {settings.min_events} "
                f"patients followed beyond it; the longest follow-up is "
                f"{cc['time'].max() / upy:.2f} years)"
            )

        cohort_rows.append(
            {
                "cohort": role,
                "source": src,
                "predictions": info["predictions"],
                "n_predictions": info["n_predictions"],
                "n_clinical": info["n_clinical"],
                "n": len(table),
                "events": int(table["event"].sum()),
                "n_complete": len(cc),
                "events_complete": int(cc["event"].sum()),
                "median_follow_up_years": median_follow_up(table["time"], table["event"]) / upy,
                "horizons_years": ", ".join(f"{h / upy:g}" for h in kept),
            }
        )

        # Kaplan-Meier by risk group.
        ticks = plots.year_ticks(table["time"].max() / upy) * upy
        km = kaplan_meier(table["time"], table["event"], table["risk_group"], ticks)
        add(
            "km_medians",
            km.summary.assign(logrank_statistic=km.logrank_statistic, logrank_p=km.logrank_p),
            role,
        )
        at_risk = km.at_risk.reset_index().assign(years=lambda f: f["time"] / upy)
        add("numbers_at_risk", at_risk, role)
        figure(
            "km",
            role,
            f"{role}: Kaplan-Meier by CRCRS risk group",
            plots.km_figure(km, f"{role.capitalize()} cohort: CRCRS risk groups", upy),
        )

        # Cox models within this cohort.
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
        add("cox", cox, role)
        add(
            "proportional_hazards",
            pd.concat([proportional_hazards_test(m) for m in multi], ignore_index=True),
            role,
        )
        forest = _forest_rows(
            cox[(cox["variable"] != "crcrs") & (cox["model"] != "multivariable (CRCRS continuous)")]
        )
        figure(
            "cox",
            role,
            f"{role}: hazard ratios, univariable and multivariable (risk group)",
            plots.forest_figure(forest, f"{role.capitalize()} cohort: Cox models"),
        )
        sub_enc = encoding.subset(["risk_group", *covariates])
        subgroups = subgroup_hazard_ratios(table, sub_enc, "risk_group", source=src)
        add("subgroups", subgroups, role)
        figure(
            "subgroups",
            role,
            f"{role}: hazard ratio of high vs low CRCRS within subgroups",
            plots.forest_figure(
                subgroups.assign(
                    label=subgroups["covariate"]
                    + ": "
                    + subgroups["subgroup"]
                    + " (n="
                    + subgroups["n"].astype(str)
                    + ")"
                ),
                f"{role.capitalize()} cohort: high vs low CRCRS by subgroup",
            ),
        )

        # Discrimination of the training-fitted models.
        designs = {m.name: m.design(cc, src) for m in models}
        grid = brier_grid(cc["time"], max(kept))
        risk = {
            MODEL_CRCRS: cc["crcrs"].to_numpy(float),
            MODEL_CLINICAL: m_clinical.linear_predictor(designs[MODEL_CLINICAL]),
            MODEL_BOTH: m_both.linear_predictor(designs[MODEL_BOTH]),
        }
        survival = {m.name: m.survival(designs[m.name], grid) for m in models}
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
        add(
            "discrimination", disc.metrics.assign(horizon_years=disc.metrics["horizon"] / upy), role
        )
        add(
            "discrimination_difference",
            disc.differences.assign(horizon_years=disc.differences["horizon"] / upy),
            role,
        )
        add("time_auc", disc.auc_curve.assign(years=disc.auc_curve["time"] / upy), role)
        figure(
            "discrimination",
            role,
            f"{role}: time-dependent AUC",
            plots.auc_figure(
                disc.auc_curve,
                disc.metrics[disc.metrics["metric"] == "auc"],
                upy,
                f"{role.capitalize()} cohort: time-dependent AUC",
            ),
        )

        # Calibration of the nomogram model at each horizon.
        surv_h = m_both.survival(designs[MODEL_BOTH], kept)
        calib = []
        for j, h in enumerate(kept):
            c = calibration(surv_h[:, j], cc["time"], cc["event"], h, settings.calibration_groups)
            calib.append(
                c.assign(horizon=h, horizon_years=h / upy, horizon_label=_label_years(h / upy))
            )
        calib = pd.concat(calib, ignore_index=True)
        add("calibration", calib, role)
        figure(
            "calibration",
            role,
            f"{role}: calibration of the nomogram",
            plots.calibration_figure(
                calib, f"{role.capitalize()} cohort: calibration (CRCRS + clinical)"
            ),
        )

        # Decision curves at one horizon.
        if settings.dca_horizon_years is not None:
            dca_h = settings.dca_horizon_years * upy
        else:
            dca_h = train_horizons[(len(train_horizons) - 1) // 2]
        ok, why = usable_horizons(
            cc["time"], cc["event"], [dca_h], settings.min_events, settings.time_unit
        )
        if not ok:
            notes.append(f"{src}: no decision curves at {_label_years(dca_h / upy)}: {why[0]}")
        else:
            probs = {m.name: 1.0 - m.survival(designs[m.name], [dca_h])[:, 0] for m in models}
            dca = decision_curve(probs, cc["time"], cc["event"], dca_h)
            add("decision_curve", dca.assign(horizon=dca_h, horizon_years=dca_h / upy), role)
            figure(
                "dca",
                role,
                f"{role}: decision curves at {_label_years(dca_h / upy)}",
                plots.decision_curve_figure(
                    dca,
                    f"{role.capitalize()} cohort: decision curves, "
                    f"{_label_years(dca_h / upy)} death",
                ),
            )

    nomo = build_nomogram(m_both, train_horizons)
    labels = [_label_years(h / upy) for h in train_horizons]
    figure(
        "nomogram",
        "training",
        "nomogram of CRCRS + clinical covariates (training cohort)",
        nomogram_figure(nomo, labels, "Nomogram: CRCRS + clinical (training cohort)"),
    )
    add("nomogram_points", nomo.points_table(), "training")
    add(
        "nomogram_survival",
        nomo.survival_table().assign(horizon_years=lambda f: f["horizon"] / upy),
        "training",
    )
    add("cox_nomogram", m_both.table(), "training")

    merged = {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
    merged["cohorts"] = pd.DataFrame(cohort_rows)
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=2)
    return _write(Path(out_dir), settings, merged, figures, images, tuple(notes))


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
    figures: list[tuple[str, str, str, bytes]],
    images: list[Path],
    notes: tuple[str, ...],
) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        write_csv(out / f"{name}.csv", frame)
    write_json(out / "settings.json", _settings_dict(settings))
    write_json(
        out / "results.json",
        {
            "version": __version__,
            "time_unit": settings.time_unit,
            "warnings": list(notes),
            "tables": {name: _records(frame) for name, frame in tables.items()},
        },
    )
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for i, (section, cohort, _, png) in enumerate(figures):
        with atomic_path(fig_dir / f"{i:02d}_{section}_{cohort}.png") as tmp:
            tmp.write_bytes(png)
    page = _html(settings, tables, figures, images, notes)
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Report(html=path, out_dir=out, tables=tables, warnings=notes)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table.t{border-collapse:collapse;font-size:.85em;margin:.5em 0 1.2em}
table.t th,table.t td{border:1px solid #ddd;padding:.2em .5em;text-align:right}
table.t th{background:#f3f3f3}table.t td:first-child{text-align:left}
.scroll{overflow-x:auto;max-width:100%}table.v td{overflow-wrap:anywhere;max-width:40em}
table.v th{text-align:left}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}.warn{background:#fff4e5;border-left:4px solid #f0a020;
padding:.5em 1em}.note{font-size:.85em;color:#444}
"""

SECTIONS = [
    (
        "km",
        "Kaplan-Meier curves by CRCRS risk group",
        ["km_medians"],
        "Medians in the cohort's time unit (empty = not reached); log-rank test of high vs low.",
    ),
    (
        "cox",
        "Cox proportional-hazards models",
        ["cox", "proportional_hazards"],
        "Hazard ratios with 95% CIs and Wald p. Categorical covariates are compared with their "
        "reference level (the most frequent one; 'low' for the risk group). Proportional hazards: "
        "Schoenfeld-residual test per term (Kaplan-Meier time transform, as R's cox.zph); p < 0.05 "
        "suggests the hazard ratio changes over time.",
    ),
    (
        "subgroups",
        "Subgroup hazard ratios (high vs low CRCRS)",
        ["subgroups"],
        "Within each level of a categorical covariate, or each half of a numeric one (split at its "
        "median); p_interaction is the likelihood-ratio test of risk group x covariate.",
    ),
    (
        "discrimination",
        "Discrimination",
        ["discrimination", "discrimination_difference"],
        "Models fitted on the training cohort: CRCRS alone (its score; a Cox model of it for the "
        "Brier score), the clinical covariates, and both. Uno's C is truncated at the largest "
        "horizon; censoring weights come from the cohort evaluated. Integrated Brier score: lower "
        "is better. 95% CIs from bootstrap resamples of patients (models fixed); differences are "
        "paired.",
    ),
    (
        "nomogram",
        "Nomogram (CRCRS + clinical covariates, training cohort)",
        ["cox_nomogram"],
        "Read each variable's points, add them up, and read the predicted survival at each horizon "
        "under the total.",
    ),
    (
        "calibration",
        "Calibration of the nomogram",
        ["calibration"],
        "Patients grouped by quantiles of predicted survival at each horizon; observed = "
        "Kaplan-Meier survival of the group with its 95% CI.",
    ),
    (
        "dca",
        "Decision-curve analysis",
        [],
        "Net benefit of treating the patients whose predicted risk of death by the horizon reaches "
        "the threshold (Vickers et al. 2008, survival version), against treating all or none.",
    ),
]

HIDDEN_COLUMNS = {"cohort", "source", "se", "coef", "horizon", "logrank_statistic"}
P_COLUMNS = {"p", "p_overall", "p_interaction", "logrank_p"}


def _fmt(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return ""
    if isinstance(value, float | np.floating):
        if column in P_COLUMNS:
            return "&lt;0.001" if value < 0.001 else f"{value:.3f}"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def _table_html(frame: pd.DataFrame, hidden: set[str] = HIDDEN_COLUMNS) -> str:
    cols = [c for c in frame.columns if c not in hidden]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row[c], c)}</td>" for c in cols) + "</tr>"
        for _, row in frame.iterrows()
    )
    return f'<div class="scroll"><table class="t"><tr>{head}</tr>{body}</table></div>'


def _vertical_table_html(frame: pd.DataFrame, key: str) -> str:
    """A table turned on its side: one column per row of ``frame`` (named by ``key``), one row
    per other column, so that a few records with many fields (and long paths) fit the page."""
    esc = html.escape
    head = f"<th>{esc(key)}</th>" + "".join(f"<th>{esc(str(v))}</th>" for v in frame[key])
    body = "".join(
        f"<tr><th>{esc(str(c))}</th>"
        + "".join(f"<td>{_fmt(v, c)}</td>" for v in frame[c])
        + "</tr>"
        for c in frame.columns
        if c != key
    )
    return f'<div class="scroll"><table class="t v"><tr>{head}</tr>{body}</table></div>'


def _img(data: bytes, mime: str, caption: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:{mime};base64,{b64}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _html(
    settings: ReportSettings,
    tables: dict[str, pd.DataFrame],
    figures: list[tuple[str, str, str, bytes]],
    images: list[Path],
    notes: tuple[str, ...],
) -> str:
    esc = html.escape
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(settings.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(settings.title)}</h1>",
        f"<p class='note'>mil-crcrs {esc(__version__)}, {now}. Covariates: "
        f"{esc(', '.join(settings.covariates))}; horizons {esc(str(list(settings.horizons_years)))}"
        f" years; time unit {esc(settings.time_unit)}; {settings.n_bootstrap} bootstrap "
        f"resamples (seed {settings.seed}). The numbers are also in the CSV files and "
        "results.json beside this page.</p>",
        "<h2>Cohorts</h2>",
        _vertical_table_html(tables["cohorts"], "cohort"),
    ]
    if notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in notes)
        parts.append(f"<div class='warn'><b>Warnings</b><ul>{items}</ul></div>")
    for key, heading, names, text in SECTIONS:
        parts.append(f"<h2>{esc(heading)}</h2><p class='note'>{esc(text)}</p>")
        for section, _, caption, png in figures:
            if section == key:
                parts.append(_img(png, "image/png", caption))
        for name in names:
            if name not in tables:
                continue
            for cohort, frame in tables[name].groupby("cohort", sort=False):
                parts.append(f"<h3>{esc(name.replace('_', ' '))}: {esc(str(cohort))}</h3>")
                parts.append(_table_html(frame))
    if images:
        parts.append("<h2>Additional images</h2>")
        for p in images:
            parts.append(_img(p.read_bytes(), IMAGE_TYPES[p.suffix.lower()], p.name))
    parts.append("</body></html>")
    return "\n".join(parts)
