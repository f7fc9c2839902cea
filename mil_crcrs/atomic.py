"""Atomic writes: a crash never leaves a file that looks complete but is not."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    The temporary file lives in the same folder, so the final :func:`os.replace` is atomic on
    POSIX file systems. On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    tmp_path.chmod(0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


#: Marks the name of a folder still being written (see :func:`atomic_dir`).
INCOMPLETE_MARK = ".incomplete-"


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike, keep: Callable[[str], bool] = lambda name: True
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it becomes ``path`` only on success.

    The temporary folder is named ``.<name>.incomplete-<random>`` and removed on any exception,
    so a killed or failed writer never leaves a folder at ``path`` that looks complete. An
    existing folder at ``path`` is swapped out by two renames (old aside, new in place), then
    the entries of the old folder for which ``keep(name)`` is true and that the new folder does
    not have are moved into the new one (files someone else put there), and the old one is
    deleted. A crash between the steps leaves the old folder as ``.<name>.old-<random>``,
    never a mixed one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: exists and is not a folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{INCOMPLETE_MARK}", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old)
            os.replace(tmp, path)
            for entry in sorted(old.iterdir()):
                if keep(entry.name) and not (path / entry.name).exists():
                    os.replace(entry, path / entry.name)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def safe_name(name: str) -> str:
    """A file-name-safe version of an id (never ``.``, ``..`` or hidden)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "_"
    return "_" + safe if safe.startswith(".") else safe


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, index: bool = False) -> None:
    """Write a data frame as CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
