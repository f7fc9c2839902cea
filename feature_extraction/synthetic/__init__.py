"""Synthetic slides and the offline demo built on them.

- :mod:`.settings`: :class:`DemoCohortSettings`, how the demo cohort is built;
- :mod:`.sources`: the real H&E tissue the slides are cut from;
- :mod:`.design`: patients, slides, tissue and planted masks, and the simulated outcome (its
  own exponential model with stages 1-4, not :mod:`mil_crcrs.simulate.outcome`'s Weibull one:
  the demo's numbers depend on it);
- :mod:`.slides`: rendering a slide and writing it as a pyramidal TIFF;
- :mod:`.planted`: each slide's planted-tile ground truth, as JSON (read back by
  :func:`mil_crcrs.simulate.planted.read_planted`);
- :mod:`.cohort`: :func:`build_demo_cohort`, the whole cohort on disk;
- :mod:`.demo`: ``crcrs demo``, the whole tool run on that cohort.
"""

from feature_extraction.synthetic.cohort import DemoCohort, build_demo_cohort
from feature_extraction.synthetic.settings import PLANTED_TEXTURES, DemoCohortSettings
from feature_extraction.synthetic.slides import write_pyramidal_tiff
from feature_extraction.synthetic.sources import package_file

__all__ = [
    "PLANTED_TEXTURES",
    "DemoCohort",
    "DemoCohortSettings",
    "build_demo_cohort",
    "package_file",
    "write_pyramidal_tiff",
]
