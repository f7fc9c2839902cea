"""Which files under a folder are feature files: ours, and the peers' output folders.

Private to :mod:`mil_crcrs.data.store` (:class:`~mil_crcrs.data.store.FeatureStore` lists its
files with :func:`feature_files`). A folder may hold the files itself, be a CLAM output folder
(``h5_files/``, ``pt_files/``), or hold them one or two levels down, as STAMP
(``<out>/<extractor>-<hash>/``) and TRIDENT (``<job>/<mag>x_<ps>px_.../features_<enc>/``) write.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mil_crcrs.errors import InputError

FEATURE_SUFFIXES = (".h5", ".hdf5", ".pt")


def _direct_files(folder: Path) -> list[Path]:
    return [
        child
        for child in sorted(folder.iterdir())
        if child.is_file() and child.suffix in FEATURE_SUFFIXES and not child.name.startswith(".")
    ]


def _nested_feature_folder(folder: Path) -> Path | None:
    """The one folder below ``folder`` (two levels at most) that holds feature files.

    STAMP writes ``<out>/<extractor>-<hash>/``, TRIDENT ``<job>/<mag>x_<ps>px_.../features_<enc>/``;
    ``patches/`` folders hold coordinates, not features. Several candidates is an error.
    """
    found, level = [], [folder]
    for _ in range(2):
        level = [
            d
            for parent in level
            for d in sorted(parent.iterdir())
            if d.is_dir() and not d.name.startswith(".") and d.name != "patches"
        ]
        found = [d for d in level if _direct_files(d)]
        if found:
            break
    if len(found) > 1:
        names = ", ".join(str(d.relative_to(folder)) for d in found[:4])
        raise InputError(
            f"{folder}: feature files in several folders ({names}); give one of them as the "
            "feature folder"
        )
    return found[0] if found else None


def feature_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """The feature files under ``paths`` (folders or files), folder by folder in name order."""
    for p in map(Path, paths):
        if p.is_dir():
            clam = [p / sub for sub in ("h5_files", "pt_files") if (p / sub).is_dir()]
            direct = _direct_files(p)
            if clam or direct:
                # A CLAM output folder keeps its features in h5_files/ (and pt_files/).
                for sub in clam:
                    yield from feature_files([sub])
                yield from direct
            elif (nested := _nested_feature_folder(p)) is not None:
                yield from _direct_files(nested)
        elif p.is_file():
            yield p
        else:
            raise InputError(f"{p}: no such feature file or folder")
