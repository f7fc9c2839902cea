"""Per-slide feature bags on disk: our HDF5 format, and every peer's layout, read by one reader.

This module and its private modules beside it are the only code in mil-crcrs that knows a file
format; everything else reads and writes feature files through the names here:

- :mod:`mil_crcrs.data._h5`: our HDF5 feature format (:class:`FeatureWriter`, :func:`write_bag`,
  :class:`FeatureMeta`), the extraction record and extra datasets in it
  (:func:`read_settings_record`, :func:`read_extra`), the attention files of ``crcrs predict``
  (:func:`write_attention_file`) and peers' patch files (:func:`read_coords_file`);
- :mod:`mil_crcrs.data._layouts`: which layout a ``.h5`` or ``.pt`` file has, and its arrays;
- :mod:`mil_crcrs.data._folders`: which files of a folder (a peer's output folder too) are
  feature files;
- :mod:`mil_crcrs.data._peers`: how each peer's files say what they are.

Our format (``FORMAT_VERSION`` 1) is one HDF5 file per slide with ``features`` (n_tiles, dim)
float16 or float32, ``coords`` (n_tiles, 2) int64 level-0 top-left pixels and the extraction
settings as attributes (see :mod:`mil_crcrs.data._h5`).

:func:`read_bag` and :func:`read_info` also open, detecting the layout from the content, the
files of CLAM (``h5_files/``, ``pt_files/``, with tile size and level from ``patches/``),
TRIDENT (``.h5``, ``.pt``), STAMP (``feats``, coordinates in microns) and slideflow (``.pt`` +
``.index.npz``). Coordinates are returned in level-0 pixels where that can be known, and
otherwise carried as stored, with their unit (:attr:`Bag.coords_native`,
:attr:`BagInfo.coords_unit`). What a file does not record (its encoder, tile size, the slide's
resolution) can be supplied with :class:`ReadSettings`. :class:`FeatureStore` finds the feature
files of a folder (a CLAM, TRIDENT or STAMP output folder too) and reads them lazily.

Every problem with a file raises :class:`~mil_crcrs.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mil_crcrs.data._folders import FEATURE_SUFFIXES, files_by_stem
from mil_crcrs.data._h5 import (
    ATTENTION_FORMAT,
    FORMAT_NAME,
    FORMAT_VERSION,
    LAYOUT_OURS,
    FeatureMeta,
    FeatureWriter,
    finite_mask,
    read_coords_file,
    read_extra,
    read_settings_record,
    write_attention_file,
    write_bag,
)
from mil_crcrs.data._layouts import ZeroTilesError, read_h5, read_pt
from mil_crcrs.data._peers import tile_edge_from_um, typed_encoder
from mil_crcrs.errors import InputError, SettingError

__all__ = [
    "ATTENTION_FORMAT",
    "COORDS_UNITS",
    "FEATURE_SUFFIXES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "LAYOUTS",
    "LAYOUT_CLAM_H5",
    "LAYOUT_CLAM_PT",
    "LAYOUT_OURS",
    "LAYOUT_SLIDEFLOW",
    "LAYOUT_STAMP",
    "LAYOUT_TRIDENT",
    "Bag",
    "BagInfo",
    "FeatureMeta",
    "FeatureStore",
    "FeatureWriter",
    "ReadSettings",
    "read_bag",
    "read_coords_file",
    "read_extra",
    "read_info",
    "read_settings_record",
    "tile_edge_from_um",
    "typed_encoder",
    "to_level0",
    "write_attention_file",
    "write_bag",
]

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
    per_slide_mpp : slide id (file stem) -> that slide's own level-0 resolution, read from its
        slide file (heatmaps); wins over ``slide_mpp``, a file's own value over both
    """

    encoder: str | None = None
    tile_size_level0: int | None = None
    slide_mpp: float | None = None
    per_slide_mpp: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", typed_encoder(self.encoder))  # uni_v1 -> uni
        if self.tile_size_level0 is not None and self.tile_size_level0 < 1:
            raise SettingError(
                "tile_size_level0", f"must be at least 1, got {self.tile_size_level0}"
            )
        if self.slide_mpp is not None and not self.slide_mpp > 0:
            raise SettingError("slide_mpp", f"must be positive, got {self.slide_mpp}")


@dataclass(frozen=True)
class BagInfo:
    """What is known about one feature file without reading its features.

    Fields a layout does not record are ``None``. ``has_coords`` is True when the tiles'
    level-0 pixel coordinates are known; ``coords_unit`` is the unit the file stores them in
    ("px" level-0 pixels, "um" microns, None when it has none) and ``coords_anchor`` the point
    of the tile they name ("top-left", or "centre" for slideflow); ``tool`` names what wrote
    the file.
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


def _describe(path: Path, fields: dict[str, Any], native_known: bool, s: ReadSettings) -> BagInfo:
    """A BagInfo from a layout's fields, with what ``s`` supplies where the file is silent."""
    fields = {k: v for k, v in fields.items() if k in BagInfo.__dataclass_fields__}
    if s.encoder and fields.get("encoder") and s.encoder != fields["encoder"]:
        raise SettingError(
            "encoder",
            f"'{s.encoder}' contradicts {path}, which names encoder '{fields['encoder']}'",
        )
    fields["encoder"] = fields.get("encoder") or s.encoder
    own = (s.per_slide_mpp or {}).get(path.stem)
    fields["slide_mpp"] = fields.get("slide_mpp") or own or s.slide_mpp
    size = fields.get("tile_size_level0") or s.tile_size_level0
    if size is None and fields.get("tile_size_um") and fields["slide_mpp"]:
        size = tile_edge_from_um(fields["layout"], fields["tile_size_um"], fields["slide_mpp"])
    fields["tile_size_level0"] = size
    fields["slide_id"] = fields.get("slide_id") or path.stem
    fields.setdefault("coords_unit", "px" if native_known else None)
    info = BagInfo(path=path, **fields)
    return replace(info, has_coords=native_known and _level0_note(info) == "")


def _level0_note(info: BagInfo) -> str:
    """Why the level-0 pixel coordinates of a file are unknown ('' when they are known)."""
    # These notes name the CLI flags: predict stores them in attention files (coords_note),
    # which stay as they were written.
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
        fields, features, native = read_pt(path)
        known = native is not None
    else:
        fields, features, native = read_h5(path, with_data)
        known = True
    fields.pop("coords_scale", None)
    return _describe(path, fields, known, settings), features, native


def read_info(path: str | os.PathLike, settings: ReadSettings | None = None) -> BagInfo:
    """Describe a feature file (any supported layout) without reading its features.

    (A ``.pt`` file holds nothing but its features, so those are read.)
    """
    return _read(Path(path), settings or ReadSettings(), with_data=False)[0]


def _check_finite(path: Path, features: np.ndarray) -> None:
    finite = finite_mask(features)
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
        self._paths: dict[str, Path] = files_by_stem(paths)
        self._infos: dict[str, BagInfo] = {}

    def __str__(self) -> str:
        return ", ".join(map(str, self._roots))

    @property
    def roots(self) -> list[Path]:
        """The folders (or files) the store was given."""
        return list(self._roots)

    @property
    def slide_ids(self) -> list[str]:
        return sorted(self._paths)

    def is_empty(self, slide_id: str) -> bool:
        """True for a file with zero tiles (TRIDENT writes one for a slide without tissue); a
        file with another problem is not empty (it is reported where it is read)."""
        try:
            self.info(slide_id)
        except ZeroTilesError:
            return True
        except InputError:
            return False
        return False

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
