"""The ``crcrs`` command line: a thin click shell over ``mil_crcrs`` and ``feature_extraction``."""
