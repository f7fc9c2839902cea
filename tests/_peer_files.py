"""Feature files laid out as the peers write them (see shared/reference/peer-formats.md).

Each writer takes features (n_tiles, dim) and level-0 top-left coords (n_tiles, 2) in pixels,
and writes what that tool would have written for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch


def write_stamp(
    folder: Path,
    slide: str,
    features: np.ndarray,
    coords_px: np.ndarray,
    slide_mpp: float = 0.5,
    extractor: str = "ctranspath",
    old: bool = False,
    tile_size_um: float = 256.0,
    tile_size_px: int = 224,
) -> Path:
    """STAMP 2.x: ``feats`` float16, coords in microns, file attributes; ``old`` = before
    ``tile_size_um`` (coords in px of 224-px tiles of 256 um)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slide}.h5"
    coords_um = coords_px * slide_mpp
    with h5py.File(path, "w") as f:
        f.create_dataset("feats", data=features.astype(np.float16))
        if old:
            f.create_dataset("coords", data=coords_um * 224.0 / 256.0)
            f.attrs["extractor"] = extractor
            return path
        f.create_dataset("coords", data=coords_um)
        f.attrs.update(
            {
                "stamp_version": "2.2.0",
                "extractor": extractor,
                "unit": "um",
                "tile_size_um": tile_size_um,
                "tile_size_px": tile_size_px,
                "code_hash": "1a2b3c",
                "feat_type": "tile",
            }
        )
    return path


def write_slideflow(
    folder: Path,
    slide: str,
    features: np.ndarray,
    coords_px: np.ndarray,
    tile_size_level0: int = 512,
    extractor: str | None = "ctranspath",
) -> Path:
    """slideflow: ``<slide>.pt`` + ``<slide>.index.npz`` (arr_0: tile centres, level-0 px)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slide}.pt"
    torch.save(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)), path)
    np.savez(folder / f"{slide}.index.npz", coords_px + tile_size_level0 // 2)
    if extractor is not None:
        config = {
            "extractor": {"class": f"slideflow.model.extractors.{extractor}", "kwargs": {}},
            "normalizer": None,
            "num_features": int(features.shape[1]),
            "tile_px": 224,
            "tile_um": 256,
        }
        (folder / "bags_config.json").write_text(json.dumps(config))
    return path


def write_clam(
    root: Path,
    slide: str,
    features: np.ndarray,
    coords_px: np.ndarray,
    patch_size: int | None = 256,
    patch_level: int = 0,
    downsample: float = 1.0,
) -> Path:
    """CLAM: ``h5_files/`` (features + coords, no attributes), ``pt_files/`` (features alone)
    and, unless ``patch_size`` is None, ``patches/`` with the patching attributes."""
    (root / "h5_files").mkdir(parents=True, exist_ok=True)
    (root / "pt_files").mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "h5_files" / f"{slide}.h5", "w") as f:
        f.create_dataset("features", data=features.astype(np.float32))
        f.create_dataset("coords", data=coords_px.astype(np.int32))
    torch.save(torch.from_numpy(features.astype(np.float32)), root / "pt_files" / f"{slide}.pt")
    if patch_size is not None:
        (root / "patches").mkdir(exist_ok=True)
        with h5py.File(root / "patches" / f"{slide}.h5", "w") as f:
            d = f.create_dataset("coords", data=coords_px.astype(np.int64))
            d.attrs.update(
                {
                    "patch_size": patch_size,
                    "patch_level": patch_level,
                    "downsample": np.array([downsample, downsample]),
                    "downsampled_level_dim": np.array([10_000, 8_000]),
                    "level_dim": np.array([10_000, 8_000]),
                    "name": slide,
                }
            )
    return root / "h5_files" / f"{slide}.h5"


def write_trident_pt(
    job: Path, slide: str, features: np.ndarray, coords_px: np.ndarray, encoder: str = "uni_v1"
) -> Path:
    """TRIDENT saving ``.pt``: ``features_<encoder>/<slide>.pt`` and
    ``patches/<slide>_patches.h5`` with its coordinate attributes."""
    (job / f"features_{encoder}").mkdir(parents=True, exist_ok=True)
    (job / "patches").mkdir(exist_ok=True)
    path = job / f"features_{encoder}" / f"{slide}.pt"
    torch.save(torch.from_numpy(features.astype(np.float32)), path)
    with h5py.File(job / "patches" / f"{slide}_patches.h5", "w") as f:
        d = f.create_dataset("coords", data=coords_px.astype(np.int64))
        d.attrs.update(
            {
                "patch_size": 256,
                "patch_size_level0": 512,
                "level0_magnification": 40,
                "target_magnification": 20,
                "overlap": 0,
                "name": slide,
                "level0_width": 50_000,
                "level0_height": 20_000,
            }
        )
    return path


def stamp_feature_path(
    out: Path, extractor: str, code_hash: str, wsi_dir: Path, slide: Path
) -> Path:
    """Where STAMP writes a slide's features (``stamp.preprocessing.extract_``):
    ``<out>/<extractor>-<hash>/<slide path relative to wsi_dir>.h5``, sub-folders mirrored."""
    return out / f"{extractor}-{code_hash}" / slide.relative_to(wsi_dir).with_suffix(".h5")


def _trident_save_h5(path: Path, assets: dict, attributes: dict) -> None:
    """``trident.IO.save_h5``: chunked datasets, dict attributes as JSON, None as 'None'."""
    with h5py.File(path, "w") as f:
        for key, val in assets.items():
            dset = f.create_dataset(
                key,
                shape=val.shape,
                maxshape=(None,) + val.shape[1:],
                chunks=(1,) + val.shape[1:],
                dtype=val.dtype,
            )
            dset[:] = val
            for attr_key, attr_val in attributes.get(key, {}).items():
                if isinstance(attr_val, dict):
                    attr_val = json.dumps(attr_val)
                elif attr_val is None:
                    attr_val = "None"
                dset.attrs[attr_key] = attr_val


def trident_coords_attrs(
    slide: str, patch_size: int, src_mag: int, target_mag: int, width: int, height: int
) -> dict:
    """``trident.IO.save_coords``' attributes on ``coords``."""
    return {
        "patch_size": patch_size,
        "patch_size_level0": patch_size * src_mag // target_mag,
        "level0_magnification": src_mag,
        "target_magnification": target_mag,
        "overlap": 0,
        "name": slide,
        "savetodir": "patches",
        "level0_width": width,
        "level0_height": height,
    }


def write_trident(
    job: Path,
    slide: str,
    features: np.ndarray,
    coords_px: np.ndarray,
    coords_attrs: dict,
    encoder: str = "uni_v1",
    saveas: str = "h5",
) -> Path:
    """TRIDENT's ``WSI.extract_features``: ``features_<encoder>/<slide>.h5`` (features and
    coords with their attributes), or with ``saveas="pt"`` ``torch.save`` of the numpy array
    and the coordinates in ``patches/<slide>_patches.h5``. Zero tiles: float32 (0, dim)."""
    folder = job / f"features_{encoder}"
    folder.mkdir(parents=True, exist_ok=True)
    coords = np.asarray(coords_px, dtype=np.int64).reshape(-1, 2)
    (job / "patches").mkdir(exist_ok=True)
    _trident_save_h5(
        job / "patches" / f"{slide}_patches.h5", {"coords": coords}, {"coords": coords_attrs}
    )
    if saveas == "pt":
        torch.save(features, folder / f"{slide}.pt")
        return folder / f"{slide}.pt"
    _trident_save_h5(
        folder / f"{slide}.h5",
        {"features": features, "coords": coords},
        {
            "features": {"name": slide, "savetodir": str(folder), "encoder": encoder},
            "coords": coords_attrs,
        },
    )
    return folder / f"{slide}.h5"
