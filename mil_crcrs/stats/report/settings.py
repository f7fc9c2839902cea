"""The settings of a survival report: :class:`ReportSettings`, checked when made.

A bad value raises :class:`~mil_crcrs.errors.SettingError` naming the field (``horizons_years``,
``n_bootstrap`` ...); the CLI names its own flag instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mil_crcrs.data.cohort import DAYS_PER_UNIT, TIME_UNITS
from mil_crcrs.data.tables import Columns
from mil_crcrs.errors import SettingError

#: Columns of the joined patient table that are not clinical covariates.
RESERVED = ("patient_id", "crcrs", "risk_group", "time", "event", "fold")


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
        self._check_covariates()
        if self.time_unit not in TIME_UNITS:
            raise SettingError(
                "time_unit", f"must be one of {', '.join(TIME_UNITS)}, got {self.time_unit!r}"
            )
        if not self.horizons_years or any(not h > 0 for h in self.horizons_years):
            raise SettingError(
                "horizons_years", f"must be positive years, got {self.horizons_years}"
            )
        if self.n_bootstrap < 0:
            raise SettingError("n_bootstrap", f"must be >= 0, got {self.n_bootstrap}")
        if self.min_events < 1:
            raise SettingError("min_events", f"must be >= 1, got {self.min_events}")
        if self.calibration_groups < 2:
            raise SettingError(
                "calibration_groups", f"must be >= 2 groups, got {self.calibration_groups}"
            )
        if self.dca_horizon_years is not None and not self.dca_horizon_years > 0:
            raise SettingError(
                "dca_horizon_years", f"must be positive years, got {self.dca_horizon_years}"
            )

    def _check_covariates(self) -> None:
        if not self.covariates:
            raise SettingError("covariates", "must name at least one clinical covariate")
        for name in self.covariates:
            if name in RESERVED:
                raise SettingError(
                    "covariates",
                    f"must be clinical columns: '{name}' is not a clinical covariate "
                    "(it is reserved)",
                )
        dup = {c for c in self.covariates if self.covariates.count(c) > 1}
        if dup:
            raise SettingError("covariates", f"given twice: {', '.join(sorted(dup))}")
        stray = [c for c in self.categorical if c not in self.covariates]
        if stray:
            raise SettingError(
                "categorical",
                f"covariate(s) {', '.join(stray)} are not among the covariates",
            )

    @property
    def unit_per_year(self) -> float:
        """Time units in one year (365.25 for days)."""
        return DAYS_PER_UNIT["years"] / DAYS_PER_UNIT[self.time_unit]
