"""How the peers' feature files say what they are: CLAM, TRIDENT, STAMP and slideflow.

:mod:`mil_crcrs.data.store` is the one reader; this module knows each peer's layout (see
``shared/reference/peer-formats.md``) and turns it into the fields of a
:class:`~mil_crcrs.data.store.BagInfo`, as a plain dict. Nothing here reads a feature matrix.

- CLAM ``h5_files/<slide>.h5``: ``features`` + ``coords`` (level-0 px), no attributes; the
  tile size and level are in ``patches/<slide>.h5`` (attributes ``patch_size``,
  ``patch_level``, ``downsample``, ``level_dim``) when that folder sits beside.
- CLAM ``pt_files/<slide>.pt``: the features alone; coordinates come from ``h5_files/``.
- TRIDENT ``features_<encoder>/<slide>.h5`` (attributes on ``features`` and ``coords``), or
  ``.pt`` with coordinates from ``patches/<slide>_patches.h5``.
- STAMP ``<slide>.h5``: ``feats`` (float16) and ``coords`` in microns (file attributes ``unit``,
  ``tile_size_um``, ``extractor``, ``stamp_version``, ``code_hash``); files written before
  ``tile_size_um`` existed hold coordinates in 224-px units of 256-um tiles.
- slideflow ``<slide>.pt`` + ``<slide>.index.npz`` (``arr_0``: level-0 px tile *centres*) and a
  ``bags_config.json`` naming the extractor and ``tile_px``/``tile_um``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mil_crcrs.data._open import open_h5
from mil_crcrs.errors import InputError

CLAM = "CLAM"
TRIDENT = "TRIDENT"
STAMP = "STAMP"
SLIDEFLOW = "slideflow"

#: STAMP's defaults, and what files written before ``tile_size_um`` was recorded used.
STAMP_TILE_UM = 256.0
STAMP_TILE_PX = 224


#: Each peer's encoder names (from its source) -> ours, where both name the same network;
#: None where we have no such encoder (the peer's name is kept). TRIDENT's ``resnet50`` is
#: timm's ``resnet50.tv_in1k`` cut after layer 3 and average-pooled
#: (``trident.patch_encoder_models.load.ResNet50InferenceEncoder``), CLAM's ``resnet50_trunc``.
PEER_ENCODERS: dict[str, dict[str, str | None]] = {
    TRIDENT: {  # trident.patch_encoder_models.load.encoder_factory
        "resnet50": "resnet50_trunc",
        "uni_v1": "uni",
        "uni_v2": "uni2-h",
        "gigapath": "gigapath",
        **dict.fromkeys(
            "conch_v1 conch_v15 ctranspath phikon phikon_v2 keep virchow virchow2 hoptimus0 "
            "hoptimus1 h0-mini musk openmidnight midnight12k gpfm hibou_l kaiko-vitb8 "
            "kaiko-vitb16 kaiko-vits8 kaiko-vits16 kaiko-vitl14 lunit-vits8 genbio-pathfm "
            "gemma4-e4b gemma4-26b".split()
        ),
    },
    CLAM: {  # CLAM models/builder.py get_encoder
        "resnet50_trunc": "resnet50_trunc",
        "uni_v1": "uni",
        "conch_v1": None,
        "conch_v1_5": None,
    },
    STAMP: {  # stamp.preprocessing.config.ExtractorName
        "uni": "uni",
        "uni2": "uni2-h",
        "gigapath": "gigapath",
        **dict.fromkeys(
            "ctranspath chief-ctranspath conch conch1_5 dino-bloom h-optimus-0 h-optimus-1 "
            "virchow virchow-full virchow2 musk mstar plip keep ticon empty red-dino".split()
        ),
    },
}
#: Names a user may type for one of our encoders (CLAM's, TRIDENT's and STAMP's spellings
#: that cannot mean anything else; ``resnet50`` alone is timm's full ResNet-50).
ENCODER_ALIASES = {
    "uni_v1": "uni",
    "uni_v2": "uni2-h",
    "uni2": "uni2-h",
    "resnet50_trunc": "resnet50_trunc",
}


def typed_encoder(name: str | None) -> str | None:
    """Our registry name for an encoder name a user typed (:data:`ENCODER_ALIASES`)."""
    return ENCODER_ALIASES.get(name, name) if name else name


def our_encoder(tool: str | None, name: str | None) -> str | None:
    """Our registry name for the encoder a peer's file names (the name itself where we have no
    such encoder or the tool is unknown)."""
    if name is None:
        return None
    return PEER_ENCODERS.get(tool or "", {}).get(name) or name


def attr(attrs: Mapping[str, Any], key: str, kind: type) -> Any:
    """An attribute converted to ``kind``, or None where absent or 'None' (TRIDENT writes that)."""
    if key not in attrs:
        return None
    value = attrs[key]
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    if value is None or (isinstance(value, str) and value in ("None", "")):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _pair(attrs: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """A two-number attribute (CLAM's ``downsample``, ``level_dim``), or None."""
    if key not in attrs:
        return None
    value = np.asarray(attrs[key]).ravel()
    if value.size != 2 or value.dtype.kind not in "fiu":
        return None
    return float(value[0]), float(value[1])


# --------------------------------------------------------------------------------------------
# HDF5 layouts


def is_stamp(f: h5py.File) -> bool:
    return "feats" in f and "features" not in f


def stamp_fields(path: Path, f: h5py.File) -> dict[str, Any]:
    """BagInfo fields of a STAMP file, and how to read its coordinates (``coords_scale``)."""
    a = f.attrs
    feats = f["feats"]
    kind = attr(a, "feat_type", str)
    if feats.ndim != 2 or (kind is not None and kind != "tile"):
        raise InputError(
            f"{path}: STAMP {kind or 'slide'}-level features {feats.shape}; mil-crcrs needs "
            "tile-level features (STAMP's feat_type 'tile')"
        )
    unit = attr(a, "unit", str)
    tile_um = attr(a, "tile_size_um", float)
    scale = 1.0
    if tile_um is None:  # before STAMP recorded it: coords in px of 224-px, 256-um tiles
        tile_um, scale = STAMP_TILE_UM, STAMP_TILE_UM / STAMP_TILE_PX
        unit = "um"
    if unit not in ("um", "micron", "microns", "µm"):
        raise InputError(f"{path}: STAMP coordinates in unit {unit!r}; only microns are read")
    version = attr(a, "stamp_version", str)
    return {
        "layout": "stamp",
        "tool": f"{STAMP} {version}" if version else STAMP,
        "encoder": our_encoder(STAMP, attr(a, "extractor", str)),
        "tile_size_px": attr(a, "tile_size_px", int) or STAMP_TILE_PX,
        "tile_size_um": tile_um,
        "settings_hash": attr(a, "code_hash", str),
        "coords_unit": "um",
        "coords_scale": scale,
    }


def tile_edge_from_um(layout: str, tile_size_um: float, slide_mpp: float) -> int:
    """A tile's edge in level-0 pixels from its edge in microns, as the tool that cut it did.

    STAMP cuts ``ceil(tile_size_um / slide_mpp)`` slide pixels (256 um at 0.499 um/px: 514 px,
    ``stamp.preprocessing.tiling``); other layouts are rounded to the nearest pixel.
    """
    edge = tile_size_um / slide_mpp
    if layout == "stamp":
        return int(math.ceil(edge - 1e-9))
    return int(round(edge))


def is_trident(f: h5py.File) -> bool:
    coords_attrs = f["coords"].attrs if "coords" in f else {}
    return bool(len(f["features"].attrs)) or "patch_size_level0" in coords_attrs


def trident_fields(path: Path, f: h5py.File) -> dict[str, Any]:
    fa = f["features"].attrs
    fields = trident_coords_fields(f["coords"].attrs) if "coords" in f else {}
    # its "name" is the slide's, not the encoder's; the folder is features_<encoder>
    encoder = attr(fa, "encoder", str) or _trident_folder_encoder(path)
    name = fields.pop("name", None)
    encoder = our_encoder(TRIDENT, encoder)
    return {**fields, "layout": "trident", "tool": TRIDENT, "encoder": encoder, "slide_id": name}


def _trident_folder_encoder(path: Path) -> str | None:
    """The encoder TRIDENT names its feature folder after (``features_<encoder>/``), or None."""
    folder = path.parent.name
    return folder[len("features_") :] or None if folder.startswith("features_") else None


def trident_coords_fields(ca: Mapping[str, Any]) -> dict[str, Any]:
    """Fields from TRIDENT's attributes on ``coords`` (in a feature or a patches file)."""
    mag0 = attr(ca, "level0_magnification", float)
    target_mag = attr(ca, "target_magnification", float)
    return {
        "name": attr(ca, "name", str),
        "tile_size_px": attr(ca, "patch_size", int),
        "tile_size_level0": attr(ca, "patch_size_level0", int),
        "magnification": target_mag,
        "slide_mpp": (10.0 / mag0) if mag0 else None,
        "target_mpp": (10.0 / target_mag) if target_mag else None,
        "level0_width": attr(ca, "level0_width", int),
        "level0_height": attr(ca, "level0_height", int),
        "coords_unit": "px",
    }


def clam_coords_fields(ca: Mapping[str, Any]) -> dict[str, Any]:
    """Tile size and level from CLAM's attributes on ``coords`` (``patches/<slide>.h5``)."""
    size = attr(ca, "patch_size", int)
    level = attr(ca, "patch_level", int)
    down = _pair(ca, "downsample")
    level0 = None
    if size is not None and level == 0:
        level0 = size
    elif size is not None and down is not None:
        level0 = int(round(size * down[0]))
    fields: dict[str, Any] = {"tile_size_px": size, "level": level, "tile_size_level0": level0}
    dims = _pair(ca, "level_dim")
    if dims is not None and level == 0:
        fields["level0_width"], fields["level0_height"] = int(dims[0]), int(dims[1])
    return fields


def clam_fields(path: Path, f: h5py.File) -> dict[str, Any]:
    """CLAM h5_files: nothing in the file; what ``patches/`` beside it knows, if anything."""
    fields: dict[str, Any] = {"layout": "clam_h5", "tool": CLAM, "coords_unit": "px"}
    fields.update(_known(clam_coords_fields(f["coords"].attrs)) if "coords" in f else {})
    fields.update({k: v for k, v in patches_fields(path).items() if fields.get(k) is None})
    return fields


def _known(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


# --------------------------------------------------------------------------------------------
# Files beside a feature file


def patches_file(path: Path) -> Path | None:
    """CLAM's ``patches/<slide>.h5`` or TRIDENT's ``patches/<slide>_patches.h5`` near ``path``."""
    stem = path.stem
    for folder in (path.parent.parent / "patches", path.parent / "patches"):
        for name in (f"{stem}.h5", f"{stem}_patches.h5"):
            if (folder / name).is_file():
                return folder / name
    return None


def patches_fields(path: Path) -> dict[str, Any]:
    """What a patches file beside ``path`` says about its tiles (empty if none is there)."""
    found = patches_file(path)
    if found is None:
        return {}
    with open_h5(found) as f:
        if "coords" not in f:
            return {}
        ca = f["coords"].attrs
        fields = trident_coords_fields(ca) if "patch_size_level0" in ca else {}
        fields.pop("name", None)
        return _known({**clam_coords_fields(ca), **_known(fields)})


def pt_companion(path: Path) -> tuple[str, Path | None]:
    """Which layout a ``.pt`` file belongs to, and the file holding its coordinates.

    slideflow (``<slide>.index.npz`` beside), CLAM (``../h5_files/<slide>.h5``), TRIDENT
    (``<slide>.h5`` beside, or a patches file), or none.
    """
    stem = path.stem
    npz = path.with_name(f"{stem}.index.npz")
    if npz.is_file():
        return "slideflow", npz
    clam = path.parent.parent / "h5_files" / f"{stem}.h5"
    if clam.is_file():
        return "clam_pt", clam
    beside = path.with_name(f"{stem}.h5")
    if beside.is_file():
        return "trident_pt", beside
    patches = patches_file(path)
    if patches is not None:
        return "trident_pt" if patches.name.endswith("_patches.h5") else "clam_pt", patches
    return ("clam_pt" if path.parent.name == "pt_files" else "pt"), None


def slideflow_fields(path: Path) -> dict[str, Any]:
    """What ``bags_config.json`` beside a slideflow bag says (encoder, tile px and microns)."""
    fields: dict[str, Any] = {
        "layout": "slideflow",
        "tool": SLIDEFLOW,
        "coords_unit": "px",
        "coords_anchor": "centre",
    }
    config_path = path.parent / "bags_config.json"
    if not config_path.is_file():
        return fields
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{config_path}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(config, dict):
        return fields
    extractor = config.get("extractor")
    if isinstance(extractor, dict):
        extractor = extractor.get("name") or str(extractor.get("class", "")).split(".")[-1]
    tile_um = config.get("tile_um")
    fields.update(
        encoder=str(extractor) if extractor else None,
        tile_size_px=attr(config, "tile_px", int),
        tile_size_um=float(tile_um) if isinstance(tile_um, (int, float)) else None,
    )
    return fields


def read_npz_coords(path: Path) -> np.ndarray:
    """slideflow's ``arr_0`` (n_tiles, 2) tile locations from ``<slide>.index.npz``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "arr_0" not in data:
                raise InputError(f"{path}: no 'arr_0' array of tile locations")
            return np.asarray(data["arr_0"], dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc.__class__.__name__})") from None


def pt_fields(kind: str, path: Path) -> dict[str, Any]:
    """BagInfo fields of a ``.pt`` feature file of layout ``kind`` (see :func:`pt_companion`)."""
    if kind == "slideflow":
        return slideflow_fields(path)
    if kind == "trident_pt":
        encoder = our_encoder(TRIDENT, _trident_folder_encoder(path))
        return {"layout": "trident", "tool": TRIDENT, "encoder": encoder}
    return {"layout": "clam_pt", "tool": CLAM if kind == "clam_pt" else None}
