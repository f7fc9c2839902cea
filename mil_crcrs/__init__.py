"""mil-crcrs: attention-MIL survival scores (CRCRS) from precomputed whole-slide-image features.

The names below are the public API; everything else is internal.
"""

from mil_crcrs._version import __version__
from mil_crcrs.cohort import Cohort, Columns, cohort_from_slides, read_cohort
from mil_crcrs.errors import InputError
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
    "Cohort",
    "Columns",
    "FeatureMeta",
    "FeatureStore",
    "FeatureWriter",
    "InputError",
    "__version__",
    "cohort_from_slides",
    "read_bag",
    "read_cohort",
    "read_info",
    "write_bag",
]
