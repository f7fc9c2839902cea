"""mil-crcrs: attention-MIL survival scores (CRCRS) from precomputed whole-slide-image features.

The names below are the public API; everything else is internal. The feature store and cohort
table import eagerly; the names that need torch or scikit-survival (training, the model, the
report, the simulator) import on first use, so ``crcrs --help`` and ``import mil_crcrs`` stay
quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mil_crcrs._version import __version__
from mil_crcrs.data.cohort import Cohort, cohort_from_slides, read_cohort
from mil_crcrs.data.store import (
    Bag,
    BagInfo,
    FeatureMeta,
    FeatureStore,
    FeatureWriter,
    ReadSettings,
    read_bag,
    read_info,
    write_bag,
)
from mil_crcrs.data.tables import Columns
from mil_crcrs.errors import InputError

_LAZY = {
    "FitSettings": "mil_crcrs.train.settings",
    "fit": "mil_crcrs.fitting",
    "CRCRSModel": "mil_crcrs.ensemble",
    "load_model": "mil_crcrs.ensemble",
    "ReportSettings": "mil_crcrs.stats.report.settings",
    "build_report": "mil_crcrs.stats.report.build",
    "SimulationSettings": "mil_crcrs.simulate",
    "simulate_cohort": "mil_crcrs.simulate",
    "create_model": "mil_crcrs.models",
    "list_models": "mil_crcrs.models",
    "AssociateSettings": "mil_crcrs.omics",
    "associate": "mil_crcrs.omics",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily
    from mil_crcrs.ensemble import CRCRSModel, load_model
    from mil_crcrs.fitting import fit
    from mil_crcrs.models import create_model, list_models
    from mil_crcrs.omics import AssociateSettings, associate
    from mil_crcrs.simulate import SimulationSettings, simulate_cohort
    from mil_crcrs.stats.report.build import build_report
    from mil_crcrs.stats.report.settings import ReportSettings
    from mil_crcrs.train.settings import FitSettings


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mil_crcrs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AssociateSettings",
    "Bag",
    "BagInfo",
    "CRCRSModel",
    "Cohort",
    "Columns",
    "FeatureMeta",
    "FeatureStore",
    "FeatureWriter",
    "FitSettings",
    "InputError",
    "ReadSettings",
    "ReportSettings",
    "SimulationSettings",
    "__version__",
    "associate",
    "build_report",
    "cohort_from_slides",
    "create_model",
    "fit",
    "list_models",
    "load_model",
    "read_bag",
    "read_cohort",
    "read_info",
    "simulate_cohort",
    "write_bag",
]
