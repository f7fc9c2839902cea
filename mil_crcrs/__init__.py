"""mil-crcrs: attention-MIL survival scores (CRCRS) from precomputed whole-slide-image features.

The names below are the public API; everything else is internal.
"""

from mil_crcrs._version import __version__
from mil_crcrs.cohort import Cohort, Columns, cohort_from_slides, read_cohort
from mil_crcrs.errors import InputError
from mil_crcrs.fitting import FitSettings, fit
from mil_crcrs.model_dir import CRCRSModel, load_model
from mil_crcrs.store import (
    Bag,
    BagInfo,
    FeatureMeta,
    FeatureStore,
    FeatureWriter,
    read_bag,
    read_info,
    write_bag,
)

__all__ = [
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
    "__version__",
    "cohort_from_slides",
    "fit",
    "load_model",
    "read_bag",
    "read_cohort",
    "read_info",
    "write_bag",
]
