"""Per-slide feature bags on disk: our HDF5 format, and every peer's layout, read by one reader.

Our format (``FORMAT_VERSION`` 1) is one HDF5 file per slide:

- ``features``: (n_tiles, dim) float16 or float32
- ``coords``: (n_tiles, 2) int64, top-left (x, y) of each tile in level-0 pixels
- file attributes: ``format``, ``format_version``, ``slide_id``, ``encoder``, ``feature_dim``,
  ``tile_size_px`` (target-resolution pixels), ``tile_size_level0`` (level-0 pixels),
  ``target_mpp``, ``slide_mpp``, ``level0_width``, ``level0_height``, ``settings_hash``,
  ``package_version``, and ``settings`` (the extraction settings as JSON).

:func:`read_bag` and :func:`read_info` also open, detecting the layout from the content, the
files of CLAM (``h5_files/``, ``pt_files/``, with tile size and level from ``patches/``),
TRIDENT (``.h5``, ``.pt``), STAMP (``feats``, coordinates in microns) and slideflow (``.pt`` +
``.index.npz``); :mod:`mil_crcrs.data._peers` knows their layouts. Coordinates are returned in
level-0 pixels where that can be known, and otherwise carried as stored, with their unit
(:attr:`Bag.coords_native`, :attr:`BagInfo.coords_unit`). What a file does not record (its
encoder, tile size, the slide's resolution) can be supplied with :class:`ReadSettings`.

Every problem with a file raises :class:`~mil_crcrs.errors.InputError` naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mil_crcrs._version import __version__
from mil_crcrs.atomic import atomic_path
from mil_crcrs.data import _peers
from mil_crcrs.errors import InputError, first_line

FORMAT_NAME = "mil_crcrs.features"
FORMAT_VERSION = 1
FEATURE_SUFFIXES = (".h5", ".hdf5", ".pt")

LAYOUT_OURS = "mil_crcrs"
LAYOUT_CLAM_H5 = "clam_h5"
LAYOUT_CLAM_PT = "clam_pt"
LAYOUT_TRIDENT = "trident"
LAYOUT_STAMP = "stamp"
LAYOUT_SLIDEFLOW = "slideflow"
LAYOUTS = (
    LAYOUT_OURS,
    LAYOUT_CLAM_H5,
    LAYOUT_CLAM_PT,
    LAYOUT_TRIDENT,
    LAYOUT_STAMP,
    LAYOUT_SLIDEFLOW,
)
COORDS_UNITS = ("px", "um")

_attr = _peers.attr


@dataclass(frozen=True)
class ReadSettings:
    """What the user knows about feature files that may not record it (peers' files often don't).

    A file's own value always wins; a setting that contradicts the file (another encoder) is an
    error, never a silent override.

    Parameters
    ----------
    encoder : the encoder that made the features (``--encoder``)
    tile_size_level0 : tile edge in level-0 pixels (``--tile-size``), for heatmaps
    slide_mpp : the slides' level-0 resolution in microns per pixel (``--slide-mpp``), to put
        coordinates stored in microns (STAMP) into level-0 pixels
    """

    encoder: str | None = None
    tile_size_level0: int | None = None
    slide_mpp: float | None = None

    def __post_init__(self) -> None:
        if self.tile_size_level0 is not None and self.tile_size_level0 < 1:
            raise InputError(f"--tile-size must be at least 1, got {self.tile_size_level0}")
        if self.slide_mpp is not None and not self.slide_mpp > 0:
            raise InputError(f"--slide-mpp must be positive, got {self.slide_mpp}")


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
    tool: str | None = None
    tile_size_um: float | None = None
    coords_unit: str | None = "px"
    coords_anchor: str = "top-left"

    @property
    def coords_note(self) -> str:
        """Why level-0 coordinates are unknown ('' when they are known)."""
        return "" if self.has_coords else _level0_note(self) or "unknown"


BagInfo.__doc__ = (
    (BagInfo.__doc__ or "")
    + """
    ``has_coords`` is True when the tiles' level-0 pixel coordinates are known;
    ``coords_unit`` is the unit the file stores them in ("px" level-0 pixels, "um" microns, None
    when it has none) and ``coords_anchor`` the point of the tile they name ("top-left", or
    "centre" for slideflow); ``tool`` names what wrote the file.
    """
)


@dataclass
class Bag:
    """One slide's tiles.

    Attributes
    ----------
    features : (n_tiles, dim) float16 or float32 array
    coords : (n_tiles, 2) int64 array of level-0 top-left (x, y), or None where unknown
        (``info.coords_note`` says why)
    info : BagInfo
    coords_native : (n_tiles, 2) float64 coordinates as the file stores them (unit
        ``info.coords_unit``), or None if it has none
    """

    features: np.ndarray
    coords: np.ndarray | None
    info: BagInfo
    coords_native: np.ndarray | None = None

    def level0(self, slide_mpp: float | None = None) -> np.ndarray | None:
        """Level-0 top-left coordinates, using ``slide_mpp`` (e.g. read from the slide) where
        the file stores microns and does not know the slide's resolution itself."""
        if self.coords is not None or slide_mpp is None:
            return self.coords
        return to_level0(self.coords_native, replace(self.info, slide_mpp=slide_mpp))


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


def read_extra(path: str | os.PathLike, name: str) -> np.ndarray | None:
    """The extra dataset ``name`` of one of our feature files, or None where it has none."""
    with _open_h5(Path(path)) as f:
        return f[name][...] if name in f else None


def read_settings_record(path: str | os.PathLike) -> tuple[str | None, dict[str, Any] | None]:
    """The extraction settings hash and settings saved in one feature file ((None, None) for a
    file without them, such as a peer's)."""
    with _open_h5(Path(path)) as f:
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


ATTENTION_FORMAT = "mil_crcrs.attention"


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
    with _open_h5(Path(path)) as f:
        if "coords" not in f:
            raise InputError(f"{path}: no dataset 'coords'")
        return np.asarray(f["coords"][()], dtype=np.float64), dict(f["coords"].attrs)


# --------------------------------------------------------------------------------------------
# Reading


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


def _our_fields(path: Path, f: h5py.File) -> dict[str, Any]:
    a = f.attrs
    version = _attr(a, "format_version", int)
    if version is None or version > FORMAT_VERSION:
        raise InputError(
            f"{path}: feature format version {version} is newer than this mil-crcrs "
            f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade mil-crcrs"
        )
    made_by = _attr(a, "package_version", str)
    return {
        "layout": LAYOUT_OURS,
        "tool": f"mil-crcrs {made_by}" if made_by else "mil-crcrs",
        "slide_id": _attr(a, "slide_id", str),
        "encoder": _attr(a, "encoder", str),
        "tile_size_px": _attr(a, "tile_size_px", int),
        "tile_size_level0": _attr(a, "tile_size_level0", int),
        "target_mpp": _attr(a, "target_mpp", float),
        "slide_mpp": _attr(a, "slide_mpp", float),
        "level0_width": _attr(a, "level0_width", int),
        "level0_height": _attr(a, "level0_height", int),
        "settings_hash": _attr(a, "settings_hash", str),
        "format_version": version,
        "level": 0,
        "coords_unit": "px",
    }


def _h5_fields(path: Path, f: h5py.File) -> tuple[dict[str, Any], str]:
    """The layout's BagInfo fields and the name of the features dataset."""
    if _attr(f.attrs, "format", str) == FORMAT_NAME:
        return _our_fields(path, f), "features"
    if _peers.is_stamp(f):
        return _peers.stamp_fields(path, f), "feats"
    if "features" not in f:
        names = ", ".join(sorted(f.keys())) or "nothing"
        raise InputError(f"{path}: missing dataset 'features' (the file holds {names})")
    if not isinstance(f["features"], h5py.Dataset):
        raise InputError(f"{path}: 'features' is not a dataset")
    if _peers.is_trident(f):
        return _peers.trident_fields(path, f), "features"
    return _peers.clam_fields(path, f), "features"


def _read_h5(path: Path, with_data: bool) -> tuple[dict[str, Any], Any, Any]:
    with _open_h5(path) as f:
        fields, name = _h5_fields(path, f)
        if "coords" not in f:
            raise InputError(f"{path}: missing dataset 'coords'")
        feats, coords = f[name], f["coords"]
        for what, item in ((name, feats), ("coords", coords)):
            if not isinstance(item, h5py.Dataset):
                raise InputError(f"{path}: '{what}' is not a dataset")
        _check_shapes(path, feats.shape, coords.shape)
        if feats.dtype.kind != "f":
            raise InputError(f"{path}: '{name}' must be floating point, got {feats.dtype}")
        fields.update(n_tiles=int(feats.shape[0]), feature_dim=int(feats.shape[1]))
        fields["dtype"] = str(feats.dtype)
        if not with_data:
            return fields, None, None
        native = np.asarray(_read_dataset(path, coords), dtype=np.float64)
        native = native * fields.pop("coords_scale", 1.0)
        return fields, _read_dataset(path, feats), native


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
            f"({exc.__class__.__name__}: {first_line(exc)})"
        ) from None


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


def _read_pt(path: Path) -> tuple[dict[str, Any], Any, Any]:
    """A ``.pt`` bag, with coordinates from the file beside it that holds them."""
    features = _load_pt(path)
    kind, companion = _peers.pt_companion(path)
    fields = _peers.pt_fields(kind, path)
    native = None
    if kind == "slideflow":
        native = _peers.read_npz_coords(companion)
    elif companion is not None:
        theirs, _, native = _read_h5_coords(companion)
        fields.update({k: v for k, v in theirs.items() if fields.get(k) is None})
    if features.ndim == 2 and features.shape[0] == 0:
        raise InputError(f"{path}: zero tiles")
    _check_shapes(path, features.shape, None if native is None else native.shape)
    fields.update(n_tiles=features.shape[0], feature_dim=features.shape[1])
    fields["dtype"] = str(features.dtype)
    return fields, features, native


def _read_h5_coords(path: Path) -> tuple[dict[str, Any], None, np.ndarray | None]:
    """Coordinates (and what is known about them) from a CLAM/TRIDENT h5 or patches file."""
    with _open_h5(path) as f:
        if "coords" not in f:
            return {}, None, None
        if "features" in f:
            fields, _ = _h5_fields(path, f)
        else:  # a patches file
            fields = {**_peers.patches_fields(path), "coords_unit": "px"}
            ca = f["coords"].attrs
            theirs = _peers.trident_coords_fields(ca) if "patch_size_level0" in ca else {}
            fields.update({k: v for k, v in theirs.items() if v is not None and k != "name"})
            fields.update({k: v for k, v in _peers.clam_coords_fields(ca).items() if v is not None})
        for key in ("layout", "tool", "slide_id", "format_version"):
            fields.pop(key, None)
        return fields, None, np.asarray(f["coords"][...], dtype=np.float64)


def _describe(path: Path, fields: dict[str, Any], native_known: bool, s: ReadSettings) -> BagInfo:
    """A BagInfo from a layout's fields, with what ``s`` supplies where the file is silent."""
    fields = {k: v for k, v in fields.items() if k in BagInfo.__dataclass_fields__}
    if s.encoder and fields.get("encoder") and s.encoder != fields["encoder"]:
        raise InputError(
            f"{path}: the file names encoder '{fields['encoder']}' but --encoder says '{s.encoder}'"
        )
    fields["encoder"] = fields.get("encoder") or s.encoder
    fields["slide_mpp"] = fields.get("slide_mpp") or s.slide_mpp
    size = fields.get("tile_size_level0") or s.tile_size_level0
    if size is None and fields.get("tile_size_um") and fields["slide_mpp"]:
        size = int(round(fields["tile_size_um"] / fields["slide_mpp"]))
    fields["tile_size_level0"] = size
    fields["slide_id"] = fields.get("slide_id") or path.stem
    fields.setdefault("coords_unit", "px" if native_known else None)
    info = BagInfo(path=path, **fields)
    return replace(info, has_coords=native_known and _level0_note(info) == "")


def _level0_note(info: BagInfo) -> str:
    """Why the level-0 pixel coordinates of a file are unknown ('' when they are known)."""
    if info.coords_unit is None:
        return (
            "the file holds features only; put CLAM's h5_files/ or patches/ folder beside pt_files/"
        )
    if info.coords_unit == "um" and not info.slide_mpp:
        return "coordinates are in microns and the slide's resolution is unknown (--slide-mpp)"
    if info.coords_anchor == "centre" and not info.tile_size_level0:
        return "coordinates are tile centres and the tile size is unknown (--tile-size)"
    return ""


def to_level0(native: np.ndarray | None, info: BagInfo) -> np.ndarray | None:
    """(n_tiles, 2) int64 level-0 top-left pixels from coordinates as a file stores them.

    Returns None where they cannot be known (see :attr:`BagInfo.coords_note`).
    """
    if native is None or _level0_note(info):
        return None
    xy = native / info.slide_mpp if info.coords_unit == "um" else native
    if info.coords_anchor == "centre":
        xy = xy - info.tile_size_level0 / 2.0
    return np.rint(xy).astype(np.int64)


def _read(path: Path, settings: ReadSettings, with_data: bool) -> tuple[BagInfo, Any, Any]:
    if path.suffix == ".pt":
        fields, features, native = _read_pt(path)
        known = native is not None
    else:
        fields, features, native = _read_h5(path, with_data)
        known = True
    fields.pop("coords_scale", None)
    return _describe(path, fields, known, settings), features, native


def read_info(path: str | os.PathLike, settings: ReadSettings | None = None) -> BagInfo:
    """Describe a feature file (any supported layout) without reading its features.

    (A ``.pt`` file holds nothing but its features, so those are read.)
    """
    return _read(Path(path), settings or ReadSettings(), with_data=False)[0]


def _check_finite(path: Path, features: np.ndarray) -> None:
    finite = np.isfinite(features)
    if not finite.all():
        row = int(np.argwhere(~finite)[0, 0])
        raise InputError(f"{path}: features contain NaN or inf (first at tile {row})")


def read_bag(
    path: str | os.PathLike, dtype: str | None = None, settings: ReadSettings | None = None
) -> Bag:
    """Read one feature file of any supported layout.

    Parameters
    ----------
    path : a ``.h5`` (ours, CLAM, TRIDENT, STAMP) or ``.pt`` (CLAM, TRIDENT, slideflow) file
    dtype : "float16" or "float32" to cast the features, or None to keep the stored dtype
    settings : what the user knows that the file may not record (encoder, tile size, mpp)

    Returns
    -------
    Bag with ``features`` (n_tiles, dim), ``coords`` (n_tiles, 2) int64 level-0 top-left or
    None where unknown, ``coords_native`` as stored, and ``info``.
    """
    path = Path(path)
    info, features, native = _read(path, settings or ReadSettings(), with_data=True)
    _check_finite(path, features)
    if dtype is not None:
        features = features.astype(dtype, copy=False)
    return Bag(features=features, coords=to_level0(native, info), info=info, coords_native=native)


# --------------------------------------------------------------------------------------------
# A folder of feature files


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
            f"{folder}: feature files in several folders ({names}); point --features at one"
        )
    return found[0] if found else None


def _feature_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            clam = [p / sub for sub in ("h5_files", "pt_files") if (p / sub).is_dir()]
            direct = _direct_files(p)
            if clam or direct:
                # A CLAM output folder keeps its features in h5_files/ (and pt_files/).
                for sub in clam:
                    yield from _feature_files([sub])
                yield from direct
            elif (nested := _nested_feature_folder(p)) is not None:
                yield from _direct_files(nested)
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
    settings : what the user knows that the files may not record (:class:`ReadSettings`)
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        dtype: str | None = None,
        settings: ReadSettings | None = None,
    ):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.dtype = dtype
        self.settings = settings or ReadSettings()
        self._roots = paths = [Path(p) for p in paths]
        self._paths: dict[str, Path] = {}
        for path in _feature_files(paths):
            # Where a CLAM folder has both h5_files/x.h5 and pt_files/x.pt, the h5 wins (coords).
            if path.stem in self._paths and self._paths[path.stem].suffix != ".pt":
                continue
            self._paths[path.stem] = path
        self._infos: dict[str, BagInfo] = {}

    def __str__(self) -> str:
        return ", ".join(map(str, self._roots))

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
            self._infos[slide_id] = read_info(self.path(slide_id), self.settings)
        return self._infos[slide_id]

    def load(self, slide_id: str) -> Bag:
        bag = read_bag(self.path(slide_id), dtype=self.dtype, settings=self.settings)
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
