"""From whole-slide images to per-slide HDF5 feature bags (``crcrs extract``)."""
