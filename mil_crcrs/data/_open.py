"""Opening an HDF5 file for reading, and refusing one that would make us read another file.

HDF5 lets a file point outside itself in three ways: an external link (a name that resolves in
another file), a virtual dataset (its elements mapped from other files' datasets) and external
raw storage (a dataset whose bytes live in other files). h5py follows all three silently, so a
feature file could make the tool score the bytes of any file it can read. :func:`open_h5` walks
the whole file once and refuses it, naming the object, if anything in it does so.
"""

from __future__ import annotations

from pathlib import Path

import h5py

from mil_crcrs.errors import InputError


def outside_reference(f: h5py.File) -> str | None:
    """How ``f`` first refers to another file (``"'name': an external link"``), or None.

    Every link of every group is visited without following any; soft links within the file are
    allowed (their targets are visited as what they are).
    """
    found: list[str] = []

    def check(name: str, link: h5py.HardLink | h5py.SoftLink | h5py.ExternalLink) -> bool:
        if isinstance(link, h5py.ExternalLink):
            found.append(f"'{name}': an external link to {link.filename}")
        elif not isinstance(link, (h5py.HardLink, h5py.SoftLink)):
            found.append(f"'{name}': a user-defined link")
        elif isinstance(link, h5py.HardLink):
            item = f.get(name)
            if isinstance(item, h5py.Dataset) and item.is_virtual:
                found.append(f"'{name}': a virtual dataset")
            elif isinstance(item, h5py.Dataset) and item.external:
                found.append(f"'{name}': a dataset stored in external files")
        return bool(found)  # a true value stops the visit

    f.visititems_links(check)
    return found[0] if found else None


def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file for reading; an :class:`InputError` naming it if it is missing, not
    HDF5, or refers to data in another file (:func:`outside_reference`)."""
    if not path.exists():
        raise InputError(f"{path}: no such feature file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc.__class__.__name__})") from None
    try:
        outside = outside_reference(f)
    except (OSError, KeyError, RuntimeError) as exc:
        f.close()
        raise InputError(f"{path}: damaged HDF5 structure ({exc.__class__.__name__})") from None
    if outside is not None:
        f.close()
        raise InputError(f"{path}: {outside}; refusing a file that reads data from other files")
    return f
