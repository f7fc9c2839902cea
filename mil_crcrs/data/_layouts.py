"""Reading one bag file of any layout: which layout it is, its arrays, checked.

Private to :mod:`mil_crcrs.data.store`, which turns what these functions return (a layout's
BagInfo fields as a dict, the features, the coordinates as stored) into a
:class:`~mil_crcrs.data.store.Bag`. HDF5 files are ours (:mod:`mil_crcrs.data._h5`), CLAM's,
TRIDENT's or STAMP's; ``.pt`` files are CLAM's, TRIDENT's or slideflow's, with coordinates from
the file beside them (:mod:`mil_crcrs.data._peers` knows where). Every problem raises
:class:`~mil_crcrs.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mil_crcrs.data import _peers
from mil_crcrs.data._h5 import FORMAT_NAME, our_fields
from mil_crcrs.data._open import open_h5
from mil_crcrs.errors import InputError, first_line


class ZeroTilesError(InputError):
    """A feature file with no tiles (TRIDENT writes one for a slide without tissue)."""


def _check_shapes(path: Path, features_shape: tuple, coords_shape: tuple | None) -> None:
    if len(features_shape) in (1, 2) and features_shape[0] == 0:
        raise ZeroTilesError(f"{path}: zero tiles")
    if len(features_shape) != 2:
        raise InputError(
            f"{path}: dataset 'features' must be 2-D (n_tiles, dim), got {features_shape}"
        )
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


def _h5_fields(path: Path, f: h5py.File) -> tuple[dict[str, Any], str]:
    """The layout's BagInfo fields and the name of the features dataset."""
    if _peers.attr(f.attrs, "format", str) == FORMAT_NAME:
        return our_fields(path, f), "features"
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


def read_h5(path: Path, with_data: bool) -> tuple[dict[str, Any], Any, Any]:
    """An HDF5 bag of any layout: its BagInfo fields and, ``with_data``, its features
    (n_tiles, dim) and coordinates (n_tiles, 2) float64 as stored (else None, None)."""
    with open_h5(path) as f:
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
        if coords.dtype.kind not in "iuf":  # strings read as numbers would be a guess
            raise InputError(f"{path}: 'coords' must be numbers, got {coords.dtype}")
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


def _numpy_globals() -> list[Any]:
    """What a pickled numpy array needs, for ``torch.load(weights_only=True)`` to rebuild it
    (TRIDENT saves its ``.pt`` features as a numpy array): numpy's array reconstruction under
    its numpy 2 and numpy 1 names, dtypes and bytes: nothing that runs code."""
    from numpy._core.multiarray import _reconstruct

    return [
        _reconstruct,
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        bytes,  # an empty array's data
        *(type(np.dtype(c)) for c in "efdbBhHiIlLqQ?"),
    ]


def _load_pt(path: Path) -> np.ndarray:
    """A ``.pt`` file's features: a tensor (CLAM, slideflow), a ``{"features": ...}`` dict, or
    a numpy array (TRIDENT); never unpickles anything else."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(
            f"{path}: not a readable torch tensor file ({exc.__class__.__name__})"
        ) from None
    if isinstance(obj, Mapping) and "features" in obj:
        obj = obj["features"]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind != "f":
            raise InputError(f"{path}: features must be floating point, got {obj.dtype}")
        return obj
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{path}: expected a (n_tiles, dim) tensor, got {type(obj).__name__}")
    return obj.detach().float().numpy() if obj.dtype == torch.bfloat16 else obj.detach().numpy()


def read_pt(path: Path) -> tuple[dict[str, Any], Any, Any]:
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
    _check_shapes(path, features.shape, None if native is None else native.shape)
    fields.update(n_tiles=features.shape[0], feature_dim=features.shape[1])
    fields["dtype"] = str(features.dtype)
    return fields, features, native


def _read_h5_coords(path: Path) -> tuple[dict[str, Any], None, np.ndarray | None]:
    """Coordinates (and what is known about them) from a CLAM/TRIDENT h5 or patches file."""
    with open_h5(path) as f:
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
