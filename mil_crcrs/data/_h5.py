"""Our HDF5 formats: per-slide feature files, and the small files beside them.

Private to :mod:`mil_crcrs.data.store`, which re-exports the public names. A feature file
(``FORMAT_VERSION`` 1) is one HDF5 file per slide:

- ``features``: (n_tiles, dim) float16 or float32
- ``coords``: (n_tiles, 2) int64, top-left (x, y) of each tile in level-0 pixels
- file attributes: ``format``, ``format_version``, ``slide_id``, ``encoder``, ``feature_dim``,
  ``tile_size_px`` (target-resolution pixels), ``tile_size_level0`` (level-0 pixels),
  ``target_mpp``, ``slide_mpp``, ``level0_width``, ``level0_height``, ``settings_hash``,
  ``package_version``, and ``settings`` (the extraction settings as JSON)
- any extra per-tile datasets (:func:`write_bag`'s ``extra``, read back with
  :func:`read_extra`)

Besides: the per-slide attention files ``crcrs predict`` writes (:func:`write_attention_file`)
and the coordinates of a CLAM or TRIDENT patch file (:func:`read_coords_file`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mil_crcrs._version import __version__
from mil_crcrs.atomic import atomic_path
from mil_crcrs.data._open import open_h5
from mil_crcrs.data._peers import attr
from mil_crcrs.errors import InputError

FORMAT_NAME = "mil_crcrs.features"
FORMAT_VERSION = 1
LAYOUT_OURS = "mil_crcrs"
ATTENTION_FORMAT = "mil_crcrs.attention"
#: Free disk space a feature file leaves untouched, for HDF5's metadata and its closing flush.
SPACE_RESERVE = 4 << 20


@dataclass(frozen=True)
class FeatureMeta:
    """What a feature file says about how it was made (the attributes of our format).

    Parameters
    ----------
    slide_id : str
        The slide's name, by default the file stem.
    encoder : str
        Registry name of the tile encoder.
    tile_size_px : int
        Tile edge in pixels at the target resolution (what the encoder saw).
    tile_size_level0 : int
        Tile edge in level-0 pixels.
    target_mpp : float
        Target resolution in microns per pixel.
    slide_mpp : float
        The slide's own level-0 resolution in microns per pixel.
    level0_width, level0_height : int
        Level-0 dimensions of the slide in pixels.
    settings_hash : str
        Hash of the extraction settings; files made with other settings have another hash.
    settings : dict
        The extraction settings themselves (stored as JSON).
    """

    slide_id: str
    encoder: str
    tile_size_px: int
    tile_size_level0: int
    target_mpp: float
    slide_mpp: float
    level0_width: int
    level0_height: int
    settings_hash: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Writing


def finite_mask(features: np.ndarray) -> np.ndarray:
    """Boolean mask of the finite values of ``features``.

    NaN and inf are the float16 values whose exponent bits are all ones; testing the bits
    checks a float16 bag about 3x faster than :func:`numpy.isfinite`, which converts every
    value first (reading a cohort's features is bound by this check).
    """
    if features.dtype == np.float16:
        return (features.view(np.uint16) & 0x7C00) != 0x7C00
    return np.isfinite(features)


def _meta_attrs(meta: FeatureMeta, dim: int) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "slide_id": meta.slide_id,
        "encoder": meta.encoder,
        "feature_dim": int(dim),
        "tile_size_px": int(meta.tile_size_px),
        "tile_size_level0": int(meta.tile_size_level0),
        "target_mpp": float(meta.target_mpp),
        "slide_mpp": float(meta.slide_mpp),
        "level0_width": int(meta.level0_width),
        "level0_height": int(meta.level0_height),
        "settings_hash": meta.settings_hash,
        "settings": json.dumps(dict(meta.settings), sort_keys=True),
        "package_version": __version__,
    }


class FeatureWriter:
    """Stream one slide's features into our format, atomically.

    Rows go to a temporary file beside ``path``; :meth:`close` checks the result and renames it
    into place. If the block raises, the temporary file is deleted and ``path`` is untouched.

    Examples
    --------
    >>> with FeatureWriter(path, meta, dim=1280) as writer:   # doctest: +SKIP
    ...     for feats, xy in batches:
    ...         writer.append(feats, xy)
    """

    def __init__(
        self, path: str | os.PathLike, meta: FeatureMeta, dim: int, dtype: str = "float16"
    ) -> None:
        if np.dtype(dtype) not in (np.float16, np.float32):
            raise InputError(f"feature dtype must be float16 or float32, got {dtype}")
        self.path = Path(path)
        self.meta = meta
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.n_tiles = 0
        self._ctx = atomic_path(self.path, suffix=".h5.tmp")
        self._tmp = self._ctx.__enter__()
        self._file = h5py.File(self._tmp, "w")
        # ~64 KiB chunks: a small bag stays small on disk (a chunk is stored whole), and reads
        # of large bags are no slower than with 1 MiB chunks.
        chunk = max(1, min(4096, (1 << 16) // max(1, self.dim * self.dtype.itemsize)))
        self._features = self._file.create_dataset(
            "features",
            shape=(0, self.dim),
            maxshape=(None, self.dim),
            dtype=self.dtype,
            chunks=(chunk, self.dim),
        )
        self._coords = self._file.create_dataset(
            "coords", shape=(0, 2), maxshape=(None, 2), dtype=np.int64, chunks=(chunk, 2)
        )

    def append(self, features: np.ndarray, coords: np.ndarray) -> None:
        """Append ``features`` (n, dim) and their level-0 ``coords`` (n, 2)."""
        features = np.asarray(features)
        coords = np.asarray(coords)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (n, {self.dim}), got {features.shape}")
        if coords.shape != (features.shape[0], 2):
            raise ValueError(
                f"expected coords of shape ({features.shape[0]}, 2), got {coords.shape}"
            )
        if not finite_mask(features).all():
            raise InputError(f"{self.path}: features contain NaN or inf")
        self._check_space(features.shape[0] * (self.dim * self.dtype.itemsize + 16))
        n = features.shape[0]
        start = self.n_tiles
        self._features.resize(start + n, axis=0)
        self._coords.resize(start + n, axis=0)
        self._features[start:] = features.astype(self.dtype, copy=False)
        self._coords[start:] = coords.astype(np.int64, copy=False)
        self.n_tiles += n

    def _check_space(self, nbytes: int) -> None:
        """Refuse to write where the disk cannot take ``nbytes`` and a reserve: HDF5 does not
        survive a write that fails for a full disk (the process segfaults on closing)."""
        free = shutil.disk_usage(self._tmp.parent).free
        if free < nbytes + SPACE_RESERVE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    def add_dataset(self, name: str, data: np.ndarray) -> None:
        """Store one more per-tile array beside the features (e.g. a simulation's truth)."""
        if name in ("features", "coords"):
            raise ValueError(f"{name!r} is written by append()")
        self._file.create_dataset(name, data=np.asarray(data))

    def close(self) -> Path:
        """Validate, write the attributes and move the file into place; returns its path."""
        if self.n_tiles == 0:
            self.abort()
            raise InputError(f"{self.path}: no tiles to write")
        self._file.attrs.update(_meta_attrs(self.meta, self.dim))
        self._file.close()
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._file.id.valid:
            self._file.close()
        try:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_bag(
    path: str | os.PathLike,
    features: np.ndarray,
    coords: np.ndarray,
    meta: FeatureMeta,
    dtype: str = "float16",
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write one slide's ``features`` (n_tiles, dim) and level-0 ``coords`` (n_tiles, 2), and
    any ``extra`` datasets (read back with :func:`read_extra`).

    The file appears at ``path`` only once it is complete.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise InputError(f"{path}: features must be 2-D (n_tiles, dim), got {features.shape}")
    with FeatureWriter(path, meta, dim=features.shape[1], dtype=dtype) as writer:
        writer.append(features, coords)
        for name, data in (extra or {}).items():
            writer.add_dataset(name, data)
    return Path(path)


# --------------------------------------------------------------------------------------------
# Reading


def read_extra(path: str | os.PathLike, name: str) -> np.ndarray | None:
    """The extra dataset ``name`` of one of our feature files, or None where it has none."""
    with open_h5(Path(path)) as f:
        return f[name][...] if name in f else None


def read_settings_record(path: str | os.PathLike) -> tuple[str | None, dict[str, Any] | None]:
    """The extraction settings hash and settings saved in one feature file ((None, None) for a
    file without them, such as a peer's)."""
    with open_h5(Path(path)) as f:
        digest, text = f.attrs.get("settings_hash"), f.attrs.get("settings")
    digest = digest.decode() if isinstance(digest, bytes) else digest
    text = text.decode() if isinstance(text, bytes) else text
    try:
        record = json.loads(text) if text else None
    except ValueError:
        record = None
    return (str(digest) if digest is not None else None), (
        record if isinstance(record, dict) else None
    )


def write_attention_file(
    path: str | os.PathLike,
    coords: np.ndarray,
    attention: np.ndarray,
    contribution: np.ndarray,
    attrs: Mapping[str, Any],
) -> None:
    """One slide's per-tile scores, atomically: ``coords`` (n, 2) int64 level-0 (-1 where
    unknown), ``attention`` and ``contribution`` (n,) float32, and the file ``attrs``."""
    with atomic_path(path, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coords", data=np.asarray(coords).astype(np.int64))
        f.create_dataset("attention", data=np.asarray(attention).astype(np.float32))
        f.create_dataset("contribution", data=np.asarray(contribution).astype(np.float32))
        f.attrs.update({"format": ATTENTION_FORMAT, **attrs})


def read_coords_file(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``coords`` (n, 2) float64 of a CLAM or TRIDENT patch file and that dataset's
    attributes (patch size and level)."""
    with open_h5(Path(path)) as f:
        if "coords" not in f:
            raise InputError(f"{path}: no dataset 'coords'")
        return np.asarray(f["coords"][()], dtype=np.float64), dict(f["coords"].attrs)


def our_fields(path: Path, f: h5py.File) -> dict[str, Any]:
    """The BagInfo fields of one of our feature files (an error for a newer format version)."""
    a = f.attrs
    version = attr(a, "format_version", int)
    if version is None or version > FORMAT_VERSION:
        raise InputError(
            f"{path}: feature format version {version} is newer than this mil-crcrs "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade mil-crcrs"
        )
    made_by = attr(a, "package_version", str)
    return {
        "layout": LAYOUT_OURS,
        "tool": f"mil-crcrs {made_by}" if made_by else "mil-crcrs",
        "slide_id": attr(a, "slide_id", str),
        "encoder": attr(a, "encoder", str),
        "tile_size_px": attr(a, "tile_size_px", int),
        "tile_size_level0": attr(a, "tile_size_level0", int),
        "target_mpp": attr(a, "target_mpp", float),
        "slide_mpp": attr(a, "slide_mpp", float),
        "level0_width": attr(a, "level0_width", int),
        "level0_height": attr(a, "level0_height", int),
        "settings_hash": attr(a, "settings_hash", str),
        "format_version": version,
        "level": 0,
        "coords_unit": "px",
    }
