"""What a feature folder or a model directory holds (``crcrs inspect``).

:func:`inspect_path` returns a plain dict (JSON-ready): for a feature folder the layouts
detected, the tools that wrote the files, encoder and dim, tiles per slide, the coordinates and
their unit, tile size and settings hash; for a model directory what it was trained on and how it
scored. ``cli/inspect.py`` writes it as the lines a person reads.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mil_crcrs.data.inputs import open_store, warn_empty
from mil_crcrs.data.store import ReadSettings
from mil_crcrs.errors import InputError
from mil_crcrs.model_dir import CONFIG_NAME, METRICS_NAME, MODEL_FORMAT


def inspect_path(path: str | os.PathLike, settings: ReadSettings | None = None) -> dict[str, Any]:
    """Describe a model directory (it has ``config.json``) or a folder/file of features."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return describe_model(path)
    return describe_features(path, settings)


def _counts(values) -> dict[str, int]:
    return {str(k): v for k, v in Counter(values).most_common()}


def describe_features(
    path: str | os.PathLike, settings: ReadSettings | None = None
) -> dict[str, Any]:
    """Summarise every feature file under ``path`` (attributes only; ``.pt`` files are read)."""
    store = open_store(path, settings)
    empty = [s for s in store.slide_ids if store.is_empty(s)]
    if empty:
        warn_empty(str(path), empty)
    infos = [store.info(s) for s in store.slide_ids if s not in empty]
    if not infos:
        raise InputError(f"{path}: every feature file has zero tiles")
    tiles = np.array([i.n_tiles for i in infos])
    unknown = [i for i in infos if not i.has_coords]
    return {
        "kind": "features",
        "path": str(path),
        "n_files": len(infos),
        "folders": sorted({str(i.path.parent) for i in infos}),
        "layout": _counts(i.layout for i in infos),
        "tool": _counts(i.tool or "unknown" for i in infos),
        "encoder": _counts(i.encoder or "not recorded" for i in infos),
        "feature_dim": _counts(i.feature_dim for i in infos),
        "dtype": _counts(i.dtype for i in infos),
        "tiles_per_slide": {
            "min": int(tiles.min()),
            "median": float(np.median(tiles)),
            "max": int(tiles.max()),
            "total": int(tiles.sum()),
        },
        "coords_unit": _counts(
            (i.coords_unit or "none") + (" centre" if i.coords_anchor == "centre" else "")
            for i in infos
        ),
        "coords_level0_known": len(infos) - len(unknown),
        "coords_note": unknown[0].coords_note if unknown else "",
        "tile_size_level0": _counts(i.tile_size_level0 or "unknown" for i in infos),
        "tile_size_um": _counts(i.tile_size_um or "unknown" for i in infos),
        "settings_hash": _counts(i.settings_hash or "none" for i in infos),
    }


def describe_model(directory: str | os.PathLike) -> dict[str, Any]:
    """What a model directory was trained on and how it scored (from its JSON files)."""
    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
        metrics_path = directory / METRICS_NAME
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{directory}: unreadable JSON ({exc.__class__.__name__})") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise InputError(f"{directory / CONFIG_NAME}: not a mil-crcrs model config")
    return {
        "kind": "model",
        "path": str(directory),
        "package_version": config.get("package_version"),
        "created": config.get("created"),
        "model": config.get("model", {}),
        "n_folds": config.get("n_folds"),
        "encoder": config.get("encoder"),
        "feature_dim": config.get("feature_dim"),
        "time_unit": config.get("time_unit"),
        "cutoff": config.get("cutoff", {}),
        "training_cohort": config.get("training_cohort", {}),
        "settings": config.get("settings") or {},
        "metrics": {k: v for k, v in metrics.items() if k != "folds"},
        "has_run_log": (directory / "run.log").is_file(),
    }
