"""Atomic writes: a crash never leaves a file that looks complete but is not."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mil_crcrs.errors import InputError


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
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename or not exc.errno:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc  # say which file
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


@contextlib.contextmanager
def sole_writer(path: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (an output folder) for the block.

    The lock is an ``flock`` on ``.<name>.lock`` beside it, released by the kernel however the
    process ends; a second ``command`` run writing to the same ``path`` meanwhile is refused in
    one line (two fits to one ``--out`` used to both report success, the later silently
    replacing the other's model). The empty lock file stays: removing it would let a third run
    lock a new file while a second still holds the old one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"{path}: another crcrs {command} is writing here; wait for it to finish or "
                "choose another --out"
            ) from None
        sweep_leftovers(path)  # with the lock held, no live run owns them
        yield
    finally:
        os.close(fd)


def sweep_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove what killed writers of ``path`` left beside it; returns what was removed.

    Call it only while no one else writes ``path`` (:func:`sole_writer` does). Every
    ``.<name>.incomplete-*`` folder is removed; an ``.<name>.old-*`` folder (a swap cut short
    after its first rename, :func:`atomic_dir`) is put back at ``path`` if ``path`` is missing,
    and removed if ``path`` has everything it holds, else left alone for the user to look at.
    """
    path = Path(path)
    removed = []
    for leftover in sorted(path.parent.glob(f".{glob.escape(path.name)}{INCOMPLETE_MARK}*")):
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover)
    for old in sorted(path.parent.glob(f".{glob.escape(path.name)}.old-*")):
        if not path.exists():
            os.replace(old, path)  # the previous folder, as it was before the cut-short swap
        elif all((path / entry.name).exists() for entry in old.iterdir()):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


#: The file in which :func:`output_dir` lists what a run wrote.
MANIFEST_NAME = "manifest.json"


@contextlib.contextmanager
def output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` whole when the block succeeds.

    For outputs made of many files (a report, heatmaps): a run that is killed or fails leaves
    the previous run's folder exactly as it was, never old and new files side by side. The new
    folder lists its entries in ``manifest.json``; of the old folder's entries, those its own
    manifest lists are dropped (they belong to the run being replaced) and anything else
    (files a user put there) is kept (:func:`atomic_dir`).
    """
    path = Path(path)
    old = _manifest(path / MANIFEST_NAME)
    with atomic_dir(path, keep=lambda name: name not in old and name != MANIFEST_NAME) as tmp:
        yield tmp
        write_json(tmp / MANIFEST_NAME, sorted(p.name for p in tmp.iterdir()))


def _manifest(path: Path) -> set[str]:
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def safe_name(name: str) -> str:
    """A file name for an id: the id itself where it is a short, plain name; else its plain
    characters (at most 80) and ``~`` with a digest of the whole id, so that two ids never
    share a file (``é`` and ``è`` would both become ``_``) and the name stays far below the
    255-byte limit. Never ``.``, ``..`` or hidden."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    if safe == name and len(name) <= 100 and not name.startswith("."):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe.lstrip('.')[:80]}~{digest}"


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_json(path: str | os.PathLike, obj: Any, nan_as_null: bool = True) -> None:
    """Write ``obj`` as indented JSON, atomically; NaN and infinities become ``null`` (JSON has
    no such numbers: Python's ``NaN`` is not JSON), unless ``nan_as_null`` is False (a file
    only Python reads back, bit for bit)."""
    obj = _finite(obj) if nan_as_null else obj
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (nested in dicts, lists, numpy values) as None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays and scalars
        return _finite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_csv(path: str | os.PathLike, frame: pd.DataFrame, index: bool = False) -> None:
    """Write a data frame as CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)


def save_tensors(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``torch.save(state, path)``, with a full disk reported as the :class:`OSError` it is
    (torch raises a ``RuntimeError`` naming its own source file instead)."""
    import torch

    try:
        torch.save(state, path)
    except RuntimeError as exc:
        full = shutil.disk_usage(Path(path).parent).free < (64 << 20)
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from exc


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file: the same real path, or hard links to one inode."""
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _overlap(out: Path, out_is_dir: bool, given: Path) -> str | None:
    """How writing ``out`` would touch the input ``given`` (both real paths), or None."""
    if _same(out, given):
        return "is"
    if given.is_dir() and given in out.parents and (out_is_dir or out.exists()):
        return "is inside"
    if out_is_dir and out in given.parents:
        return "holds"
    return None


PathsLike = str | os.PathLike | Sequence[str | os.PathLike] | None


def refuse_overwrite(
    outputs: Mapping[str, str | os.PathLike | None],
    inputs: Mapping[str, PathsLike],
    folders: Collection[str] = (),
) -> None:
    """Raise :class:`InputError` if writing an output could replace or change an input.

    ``outputs`` and ``inputs`` map what the user calls each path (a flag such as ``--out``) to
    the path (an input: or paths), None where not given; ``folders`` names the outputs that are
    folders. Paths are compared after resolving symbolic links (and hard links to one file
    count as one file). An output file may not be an input file or an existing file inside an
    input folder (``--out model/config.json``); an output folder may not be an input, lie
    inside an input folder (``--attention features/``) or hold an input (it may be replaced
    whole). Each output must also be writable where it is: no part of its path a file, its
    nearest existing folder writable (an :class:`OSError`, so the CLI says it in one line
    before any work is done).
    """
    for out_path in outputs.values():
        if out_path is not None:
            _check_writable(Path(out_path))
    given = [(name, p) for name, paths in inputs.items() for p in _listed(paths)]
    for out_name, out_path in outputs.items():
        if out_path is None:
            continue
        out = _real(out_path)
        for in_name, in_path in given:
            how = _overlap(out, out_name in folders, _real(in_path))
            if how is not None:
                raise InputError(
                    f"{out_path}: {out_name} {how} the input {in_name} ({in_path}); an output "
                    "may not overwrite what the same run reads, choose another path"
                )


def _check_writable(path: Path) -> None:
    """Raise the :class:`OSError` writing at ``path`` would meet, where it can be told now."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK):
        code = errno.EROFS if _read_only(folder) else errno.EACCES
        raise OSError(code, os.strerror(code), str(folder))


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _listed(paths: PathsLike) -> list[str | os.PathLike]:
    if paths is None:
        return []
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
