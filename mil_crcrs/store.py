"""Per-slide feature bags on disk: our HDF5 format, and the layouts of CLAM and TRIDENT.

Our format (``FORMAT_VERSION`` 1) is one HDF5 file per slide:

- ``features``: (n_tiles, dim) float16 or float32
- ``coords``: (n_tiles, 2) int64, top-left (x, y) of each tile in level-0 pixels
- file attributes: ``format``, ``format_version``, ``slide_id``, ``encoder``, ``feature_dim``,
  ``tile_size_px`` (target-resolution pixels), ``tile_size_level0`` (level-0 pixels),
  ``target_mpp``, ``slide_mpp``, ``level0_width``, ``level0_height``, ``settings_hash``,
  ``package_version``, and ``settings`` (the extraction settings as JSON).

:func:`read_bag` and :func:`read_info` also open, detecting the layout from the content:

- CLAM ``h5_files/<slide>.h5``: ``features`` float32 + ``coords`` int32/int64, no attributes;
- CLAM ``pt_files/<slide>.pt``: the features tensor alone (coords are taken from a sibling
  ``h5_files/<slide>.h5`` when there is one);
- TRIDENT ``features_<encoder>/<slide>.h5``: attributes on the ``features`` and ``coords`` datasets.

Every problem with a file raises :class:`~mil_crcrs.errors.InputError` naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mil_crcrs._io import atomic_path
from mil_crcrs._version import __version__
from mil_crcrs.errors import InputError

FORMAT_NAME = "mil_crcrs.features"
FORMAT_VERSION = 1
FEATURE_SUFFIXES = (".h5", ".hdf5", ".pt")

LAYOUT_OURS = "mil_crcrs"
LAYOUT_CLAM_H5 = "clam_h5"
LAYOUT_CLAM_PT = "clam_pt"
LAYOUT_TRIDENT = "trident"


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


@dataclass(frozen=True)
class BagInfo:
    """What is known about one feature file without reading its features.

    Fields a layout does not record are ``None``.
    """

    path: Path
    layout: str
    slide_id: str
    n_tiles: int
    feature_dim: int
    dtype: str
    encoder: str | None = None
    tile_size_px: int | None = None
    tile_size_level0: int | None = None
    target_mpp: float | None = None
    slide_mpp: float | None = None
    level: int | None = None
    magnification: float | None = None
    level0_width: int | None = None
    level0_height: int | None = None
    settings_hash: str | None = None
    format_version: int | None = None
    has_coords: bool = True


@dataclass
class Bag:
    """One slide's tiles.

    Attributes
    ----------
    features : (n_tiles, dim) float16 or float32 array
    coords : (n_tiles, 2) int64 array of level-0 top-left (x, y), or None if the file has none
    info : BagInfo
    """

    features: np.ndarray
    coords: np.ndarray | None
    info: BagInfo


# --------------------------------------------------------------------------------------------
# Writing


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
        if not np.isfinite(features).all():
            raise InputError(f"{self.path}: features contain NaN or inf")
        n = features.shape[0]
        start = self.n_tiles
        self._features.resize(start + n, axis=0)
        self._coords.resize(start + n, axis=0)
        self._features[start:] = features.astype(self.dtype, copy=False)
        self._coords[start:] = coords.astype(np.int64, copy=False)
        self.n_tiles += n

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
) -> Path:
    """Write one slide's ``features`` (n_tiles, dim) and level-0 ``coords`` (n_tiles, 2).

    The file appears at ``path`` only once it is complete.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise InputError(f"{path}: features must be 2-D (n_tiles, dim), got {features.shape}")
    with FeatureWriter(path, meta, dim=features.shape[1], dtype=dtype) as writer:
        writer.append(features, coords)
    return Path(path)


# --------------------------------------------------------------------------------------------
# Reading


def _attr(attrs: Mapping[str, Any], key: str, kind: type) -> Any:
    """An attribute converted to ``kind``, or None where absent or 'None' (TRIDENT writes that)."""
    if key not in attrs:
        return None
    value = attrs[key]
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if value is None or (isinstance(value, str) and value in ("None", "")):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise InputError(f"{path}: no such feature file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc.__class__.__name__})") from None


def _check_shapes(path: Path, features_shape: tuple, coords_shape: tuple | None) -> None:
    if len(features_shape) != 2:
        raise InputError(
            f"{path}: dataset 'features' must be 2-D (n_tiles, dim), got {features_shape}"
        )
    if features_shape[0] == 0:
        raise InputError(f"{path}: zero tiles")
    if features_shape[1] == 0:
        raise InputError(f"{path}: features of dimension 0 (shape {features_shape})")
    if coords_shape is not None:
        if len(coords_shape) != 2 or coords_shape[1] != 2:
            raise InputError(f"{path}: dataset 'coords' must be (n_tiles, 2), got {coords_shape}")
        if coords_shape[0] != features_shape[0]:
            raise InputError(
                f"{path}: 'coords' has {coords_shape[0]} rows but 'features' has "
                f"{features_shape[0]}"
            )


def _detect_h5_layout(path: Path, f: h5py.File) -> str:
    if _attr(f.attrs, "format", str) == FORMAT_NAME:
        return LAYOUT_OURS
    if "features" not in f:
        names = ", ".join(sorted(f.keys())) or "nothing"
        raise InputError(f"{path}: missing dataset 'features' (the file holds {names})")
    if not isinstance(f["features"], h5py.Dataset):
        raise InputError(f"{path}: 'features' is not a dataset")
    coords_attrs = f["coords"].attrs if "coords" in f else {}
    if len(f["features"].attrs) or "patch_size_level0" in coords_attrs:
        return LAYOUT_TRIDENT
    return LAYOUT_CLAM_H5


def _info_from_h5(path: Path, f: h5py.File) -> BagInfo:
    layout = _detect_h5_layout(path, f)
    if "features" not in f:
        raise InputError(f"{path}: missing dataset 'features'")
    if "coords" not in f:
        raise InputError(f"{path}: missing dataset 'coords'")
    feats, coords = f["features"], f["coords"]
    for name, item in (("features", feats), ("coords", coords)):
        if not isinstance(item, h5py.Dataset):
            raise InputError(f"{path}: '{name}' is not a dataset")
    _check_shapes(path, feats.shape, coords.shape)
    if feats.dtype.kind != "f":
        raise InputError(f"{path}: 'features' must be floating point, got {feats.dtype}")
    base = dict(
        path=path,
        layout=layout,
        n_tiles=int(feats.shape[0]),
        feature_dim=int(feats.shape[1]),
        dtype=str(feats.dtype),
    )
    if layout == LAYOUT_OURS:
        a = f.attrs
        version = _attr(a, "format_version", int)
        if version is None or version > FORMAT_VERSION:
            raise InputError(
                f"{path}: feature format version {version} is newer than this mil-crcrs "
                f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade mil-crcrs"
            )
        return BagInfo(
            **base,
            slide_id=_attr(a, "slide_id", str) or path.stem,
            encoder=_attr(a, "encoder", str),
            tile_size_px=_attr(a, "tile_size_px", int),
            tile_size_level0=_attr(a, "tile_size_level0", int),
            target_mpp=_attr(a, "target_mpp", float),
            slide_mpp=_attr(a, "slide_mpp", float),
            level0_width=_attr(a, "level0_width", int),
            level0_height=_attr(a, "level0_height", int),
            settings_hash=_attr(a, "settings_hash", str),
            format_version=version,
            level=0,
        )
    if layout == LAYOUT_TRIDENT:
        fa, ca = feats.attrs, coords.attrs
        mag0 = _attr(ca, "level0_magnification", float)
        target_mag = _attr(ca, "target_magnification", float)
        return BagInfo(
            **base,
            slide_id=_attr(ca, "name", str) or path.stem,
            encoder=_attr(fa, "encoder", str) or _attr(fa, "name", str),
            tile_size_px=_attr(ca, "patch_size", int),
            tile_size_level0=_attr(ca, "patch_size_level0", int),
            magnification=target_mag,
            slide_mpp=(10.0 / mag0) if mag0 else None,
            target_mpp=(10.0 / target_mag) if target_mag else None,
            level0_width=_attr(ca, "level0_width", int),
            level0_height=_attr(ca, "level0_height", int),
        )
    # CLAM h5_files carry no attributes; the patches file's attributes may have been kept.
    ca = coords.attrs
    level = _attr(ca, "patch_level", int)
    size = _attr(ca, "patch_size", int)
    return BagInfo(
        **base,
        slide_id=path.stem,
        tile_size_px=size,
        level=level,
        tile_size_level0=size if level == 0 else None,
    )


def _load_pt(path: Path) -> np.ndarray:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(
            f"{path}: not a readable torch tensor file ({exc.__class__.__name__})"
        ) from None
    if isinstance(obj, Mapping) and "features" in obj:
        obj = obj["features"]
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{path}: expected a (n_tiles, dim) tensor, got {type(obj).__name__}")
    return obj.detach().float().numpy() if obj.dtype == torch.bfloat16 else obj.detach().numpy()


def _clam_h5_sibling(path: Path) -> Path | None:
    sibling = path.parent.parent / "h5_files" / f"{path.stem}.h5"
    return sibling if sibling.exists() else None


def read_info(path: str | os.PathLike) -> BagInfo:
    """Describe a feature file (any supported layout) without reading its features."""
    path = Path(path)
    if path.suffix == ".pt":
        features = _load_pt(path)
        coords_shape = None
        sibling = _clam_h5_sibling(path)
        if sibling is not None:
            with _open_h5(sibling) as f:
                coords_shape = f["coords"].shape if "coords" in f else None
        _check_shapes(path, features.shape, coords_shape)
        return BagInfo(
            path=path,
            layout=LAYOUT_CLAM_PT,
            slide_id=path.stem,
            n_tiles=features.shape[0],
            feature_dim=features.shape[1],
            dtype=str(features.dtype),
            has_coords=coords_shape is not None,
        )
    with _open_h5(path) as f:
        return _info_from_h5(path, f)


def _memory_bytes() -> int:
    """This machine's physical memory in bytes (a very large number where it cannot be told)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 62


def _read_dataset(path: Path, dataset: h5py.Dataset) -> np.ndarray:
    """A whole dataset, refusing one that could not fit in memory or whose data is damaged.

    A file can declare a shape far larger than it stores (unwritten chunks read as zeros), so
    the declared size is checked before anything is allocated.
    """
    nbytes = int(np.prod(dataset.shape, dtype=np.float64) * dataset.dtype.itemsize)
    if nbytes > _memory_bytes() // 2:
        raise InputError(
            f"{path}: dataset '{dataset.name.lstrip('/')}' of shape {dataset.shape} is too large "
            f"to read ({nbytes / 2**30:.0f} GiB, more than half of this machine's memory)"
        )
    try:
        return dataset[...]
    except (OSError, MemoryError) as exc:
        raise InputError(
            f"{path}: dataset '{dataset.name.lstrip('/')}' cannot be read "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None


def _check_finite(path: Path, features: np.ndarray) -> None:
    finite = np.isfinite(features)
    if not finite.all():
        row = int(np.argwhere(~finite)[0, 0])
        raise InputError(f"{path}: features contain NaN or inf (first at tile {row})")


def read_bag(path: str | os.PathLike, dtype: str | None = None) -> Bag:
    """Read one feature file of any supported layout.

    Parameters
    ----------
    path : path to a ``.h5`` (ours, CLAM, TRIDENT) or ``.pt`` (CLAM) file
    dtype : "float16" or "float32" to cast the features, or None to keep the stored dtype

    Returns
    -------
    Bag with ``features`` (n_tiles, dim), ``coords`` (n_tiles, 2) int64 or None, and ``info``.
    """
    path = Path(path)
    if path.suffix == ".pt":
        info = read_info(path)
        features = _load_pt(path)
        coords = None
        sibling = _clam_h5_sibling(path)
        if sibling is not None:
            with _open_h5(sibling) as f:
                coords = np.asarray(f["coords"][...], dtype=np.int64)
    else:
        with _open_h5(path) as f:
            info = _info_from_h5(path, f)
            features = _read_dataset(path, f["features"])
            coords = np.asarray(_read_dataset(path, f["coords"]), dtype=np.int64)
    _check_finite(path, features)
    if dtype is not None:
        features = features.astype(dtype, copy=False)
    return Bag(features=features, coords=coords, info=info)


# --------------------------------------------------------------------------------------------
# A folder of feature files


def _feature_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            # A CLAM output folder keeps its features in h5_files/ (and pt_files/).
            for sub in ("h5_files", "pt_files"):
                if (p / sub).is_dir():
                    yield from _feature_files([p / sub])
            for child in sorted(p.iterdir()):
                if (
                    child.is_file()
                    and child.suffix in FEATURE_SUFFIXES
                    and not child.name.startswith(".")
                ):
                    yield child
        elif p.is_file():
            yield p
        else:
            raise InputError(f"{p}: no such feature file or folder")


class FeatureStore:
    """Lazy access to a cohort's feature files, keyed by slide id (the file stem).

    Nothing but the file list is read up front; :meth:`info` reads attributes only and
    :meth:`load` reads one bag, so a cohort never has to sit in memory at once.

    Parameters
    ----------
    paths : a folder (or folders, or files) of feature files
    dtype : cast loaded features to this dtype ("float16" halves memory), or None
    """

    def __init__(
        self, paths: str | os.PathLike | Sequence[str | os.PathLike], dtype: str | None = None
    ):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.dtype = dtype
        self._paths: dict[str, Path] = {}
        for path in _feature_files(paths):
            # Where a CLAM folder has both h5_files/x.h5 and pt_files/x.pt, the h5 wins (coords).
            if path.stem in self._paths and self._paths[path.stem].suffix != ".pt":
                continue
            self._paths[path.stem] = path
        self._infos: dict[str, BagInfo] = {}

    @property
    def slide_ids(self) -> list[str]:
        return sorted(self._paths)

    def __contains__(self, slide_id: object) -> bool:
        return slide_id in self._paths

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, slide_id: str) -> Path:
        try:
            return self._paths[slide_id]
        except KeyError:
            raise InputError(f"slide '{slide_id}': no feature file for it") from None

    def info(self, slide_id: str) -> BagInfo:
        if slide_id not in self._infos:
            self._infos[slide_id] = read_info(self.path(slide_id))
        return self._infos[slide_id]

    def load(self, slide_id: str) -> Bag:
        bag = read_bag(self.path(slide_id), dtype=self.dtype)
        self._infos[slide_id] = bag.info
        return bag

    def check_consistent(self, slide_ids: Iterable[str] | None = None) -> tuple[int, str | None]:
        """Check that the slides share one feature dim and encoder; returns ``(dim, encoder)``."""
        slide_ids = list(self.slide_ids if slide_ids is None else slide_ids)
        if not slide_ids:
            raise InputError("no feature files to read")
        first = self.info(slide_ids[0])
        for sid in slide_ids[1:]:
            info = self.info(sid)
            if info.feature_dim != first.feature_dim:
                raise InputError(
                    f"{info.path}: feature dim {info.feature_dim} differs from "
                    f"{first.feature_dim} in {first.path}; one cohort needs one encoder"
                )
            if info.encoder and first.encoder and info.encoder != first.encoder:
                raise InputError(
                    f"{info.path}: encoder '{info.encoder}' differs from '{first.encoder}' in "
                    f"{first.path}; one cohort needs one encoder"
                )
        encoder = next((self.info(s).encoder for s in slide_ids if self.info(s).encoder), None)
        return first.feature_dim, encoder
