"""How a simulated cohort is drawn: :class:`SimulationSettings` (see :mod:`.draw` for what the
scenarios plant)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from mil_crcrs.data.cohort import TIME_UNITS
from mil_crcrs.errors import SettingError

SCENARIOS = ("rare", "prevalence", "both", "null", "cluster")
MIN_DIM = 8
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class SimulationSettings:
    """How a simulated cohort is drawn (saved as ``simulation.json`` beside it).

    Parameters
    ----------
    scenario : "rare", "prevalence", "both", "null" or "cluster" (see :mod:`.draw`)
    n_patients : number of patients
    tiles_per_slide : (min, max) tiles per slide, drawn uniformly
    slides_per_patient : (min, max) slides per patient, drawn uniformly
    dim : feature dimension (at least 8)
    effect : standard deviation of the true log-hazard across patients (ignored for "null")
    censoring : the fraction of patients to censor, about (0 = none)
    seed : draws the patients
    world_seed : draws the phenotypes ("the encoder"); keep it to draw comparable cohorts
    time_unit : "days", "months" or "years", the unit of ``time`` in ``clinical.csv``
    rare_fraction : (min, max) of a patient's rare-tile fraction, drawn uniformly; a slide of a
        patient with a positive fraction has at least one rare tile
    prevalence_fraction : (min, max) of a patient's prevalence-tile fraction, drawn uniformly
    median_survival_days : median survival at zero risk
    weibull_shape : shape of the Weibull baseline hazard (1 = exponential)
    dtype : "float32" or "float16", the dtype of the stored features
    cluster_tiles : (min, max) tiles of the "cluster" scenario's cluster, drawn uniformly
    cluster_share : share of patients with a cluster, about ("cluster" scenario)
    scale_range : ratio of the largest to the smallest per-dimension feature scale (1 = all 1)
    offset_sd : per-dimension feature offsets, in units of each dimension's scale (0 = none)

    Raises
    ------
    SettingError
        naming the first setting out of its range.
    """

    scenario: str = "rare"
    n_patients: int = 120
    tiles_per_slide: tuple[int, int] = (40, 120)
    slides_per_patient: tuple[int, int] = (1, 2)
    dim: int = 64
    effect: float = 1.5
    censoring: float = 0.3
    seed: int = 0
    world_seed: int = 0
    time_unit: str = "days"
    rare_fraction: tuple[float, float] = (0.01, 0.08)
    prevalence_fraction: tuple[float, float] = (0.05, 0.5)
    median_survival_days: float = 1826.0
    weibull_shape: float = 1.0
    dtype: str = "float32"
    cluster_tiles: tuple[int, int] = (4, 8)
    cluster_share: float = 0.5
    scale_range: float = 1.0
    offset_sd: float = 0.0

    def __post_init__(self) -> None:
        def check(ok: bool, setting: str, problem: str) -> None:
            if not ok:
                raise SettingError(setting, problem)

        check(
            self.scenario in SCENARIOS,
            "scenario",
            f"must be one of {', '.join(SCENARIOS)}, got {self.scenario!r}",
        )
        check(self.n_patients >= 2, "n_patients", f"must be at least 2, got {self.n_patients}")
        for name in ("tiles_per_slide", "slides_per_patient", "cluster_tiles"):
            lo, hi = getattr(self, name)
            check(1 <= lo <= hi, name, f"must be (min, max) with 1 <= min <= max, got {(lo, hi)}")
        for name in ("rare_fraction", "prevalence_fraction"):
            lo, hi = getattr(self, name)
            check(
                0.0 <= lo <= hi <= 1.0,
                name,
                f"must be (min, max) with 0 <= min <= max <= 1, got {(lo, hi)}",
            )
        check(
            self.rare_fraction[1] + self.prevalence_fraction[1] <= 1.0,
            "rare_fraction",
            "and prevalence_fraction maxima must add up to at most 1",
        )
        check(self.dim >= MIN_DIM, "dim", f"must be at least {MIN_DIM}, got {self.dim}")
        check(self.effect >= 0, "effect", f"must be non-negative, got {self.effect}")
        check(0.0 <= self.censoring < 1.0, "censoring", f"must be in [0, 1), got {self.censoring}")
        check(
            self.time_unit in TIME_UNITS,
            "time_unit",
            f"must be one of {', '.join(TIME_UNITS)}, got {self.time_unit!r}",
        )
        for name in ("median_survival_days", "weibull_shape"):
            check(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        check(
            self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}"
        )
        check(
            0.0 < self.cluster_share < 1.0,
            "cluster_share",
            f"must be in (0, 1), got {self.cluster_share}",
        )
        check(self.scale_range >= 1.0, "scale_range", f"must be at least 1, got {self.scale_range}")
        check(self.offset_sd >= 0.0, "offset_sd", f"must be non-negative, got {self.offset_sd}")

    @property
    def encoder(self) -> str:
        """The name written as the feature files' encoder:
        ``simulated-<dim>[-w<world_seed>][-s<scale_range>-o<offset_sd>]``."""
        name = f"simulated-{self.dim}" + (f"-w{self.world_seed}" if self.world_seed else "")
        if self.scale_range != 1.0 or self.offset_sd != 0.0:
            name += f"-s{self.scale_range:g}-o{self.offset_sd:g}"
        return name

    def settings_hash(self) -> str:
        """16 hex digits of the SHA-256 of the settings as sorted JSON."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
