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


def _subfolders(folder: Path) -> list[Path]:
    """Sub-folders that may hold features (``patches/`` holds coordinates; hidden ones skipped)."""
    return [
        d
        for d in sorted(folder.iterdir())
        if d.is_dir() and not d.name.startswith(".") and d.name != "patches"
    ]


def _tree_files(folder: Path) -> list[Path]:
    """Every feature file in ``folder`` and its sub-folders, folder by folder in name order."""
    return _direct_files(folder) + [f for d in _subfolders(folder) for f in _tree_files(d)]


def _stamp_maker(path: Path) -> str | None:
    """For a STAMP feature file (a ``feats`` dataset), the extractor and code hash that wrote
    it; None for any other file (or an unreadable one)."""
    from mil_crcrs.data._h5 import open_h5

    try:
        with open_h5(path) as f:
            if "feats" not in f or "features" in f:
                return None
            return f"{f.attrs.get('extractor')}-{f.attrs.get('code_hash')}"
    except InputError:
        return None


def _is_stamp_file(path: Path) -> bool:
    return _stamp_maker(path) is not None


def _is_stamp_tree(folders: list[Path]) -> bool:
    """True if ``folders`` are sub-folders of one STAMP feature folder: STAMP mirrors the slide
    folder's sub-folders (``<out>/<extractor>-<hash>/<centre>/<slide>.h5``); folders of two
    extractors (``<out>/<extractor>-<hash>/`` each) are not one tree."""
    makers = {_stamp_maker(files[0]) if (files := _tree_files(d)) else None for d in folders}
    return len(makers) == 1 and None not in makers


def _feature_root(folder: Path) -> tuple[Path, bool] | None:
    """The one folder at or below ``folder`` (two levels at most) that holds the feature files,
    and whether its sub-folders belong to it (a STAMP tree).

    STAMP writes ``<out>/<extractor>-<hash>/`` (with the slide folder's sub-folders below it),
    TRIDENT ``<job>/<mag>x_<ps>px_.../features_<enc>/``; ``patches/`` folders hold coordinates,
    not features. Several candidates that are not one STAMP tree is an error.
    """
    current = folder
    for depth in range(3):
        direct = _direct_files(current)
        if direct:
            return current, _is_stamp_file(direct[0])
        found = [d for d in _subfolders(current) if _tree_files(d)]
        if not found:
            return None
        if len(found) > 1:
            if _is_stamp_tree(found):
                return current, True
            names = ", ".join(str(d.relative_to(folder)) for d in found[:4])
            raise InputError(
                f"{folder}: feature files in several folders ({names}); give one of them as the "
                "feature folder"
            )
        if depth == 2:
            return None
        current = found[0]
    return None


def feature_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """The feature files under ``paths`` (folders or files), folder by folder in name order.

    A STAMP feature folder's sub-folders (mirroring the slide folder's) are read too.
    """
    for p in map(Path, paths):
        if p.is_dir():
            clam = [p / sub for sub in ("h5_files", "pt_files") if (p / sub).is_dir()]
            if clam:
                # A CLAM output folder keeps its features in h5_files/ (and pt_files/).
                for sub in clam:
                    yield from feature_files([sub])
                yield from _direct_files(p)
            elif (found := _feature_root(p)) is not None:
                root, tree = found
                yield from _tree_files(root) if tree else _direct_files(root)
        elif p.is_file():
            yield p
        else:
            raise InputError(f"{p}: no such feature file or folder")


def files_by_stem(paths: Iterable[str | os.PathLike]) -> dict[str, Path]:
    """Slide id (file stem) -> feature file, for the files under ``paths``.

    Where a CLAM folder has both ``h5_files/x.h5`` and ``pt_files/x.pt`` the h5 wins (it has
    the coordinates); two files of one kind and name (in two sub-folders) are an error.
    """
    found: dict[str, Path] = {}
    for path in feature_files(paths):
        known = found.get(path.stem)
        if known is not None and known.suffix == path.suffix and known != path:
            raise InputError(
                f"{known} and {path}: two feature files for slide '{path.stem}'; slides are "
                "named by their file names, so keep one of them (or give one folder)"
            )
        if known is None or known.suffix == ".pt":
            found[path.stem] = path
    return found
