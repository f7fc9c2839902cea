"""What a feature folder or a model directory holds, in a few lines (``crcrs inspect``).

:func:`inspect_path` returns a plain dict (JSON-ready) and :func:`summary_lines` the lines a
person reads: for a feature folder the layout detected, the tool that wrote the files, encoder
and dim, tiles per slide, the coordinates and their unit, tile size and settings hash; for a
model directory what it was trained on and how it scored.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mil_crcrs.data.inputs import open_store
from mil_crcrs.data.store import ReadSettings
from mil_crcrs.errors import InputError
from mil_crcrs.model_dir import CONFIG_NAME, METRICS_NAME, MODEL_FORMAT

_LAYOUT_NAMES = {
    "mil_crcrs": "mil-crcrs HDF5",
    "clam_h5": "CLAM h5_files",
    "clam_pt": "CLAM pt_files (features alone)",
    "trident": "TRIDENT",
    "stamp": "STAMP",
    "slideflow": "slideflow bags",
}


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
    infos = [store.info(s) for s in store.slide_ids]
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


def _join(counts: dict[str, int], total: int) -> str:
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{k} ({v} of {total})" for k, v in counts.items())


def summary_lines(info: dict[str, Any]) -> list[str]:
    """The lines ``crcrs inspect`` prints for :func:`inspect_path`'s result."""
    if info["kind"] == "model":
        return _model_lines(info)
    n = info["n_files"]
    t = info["tiles_per_slide"]
    layouts = {_LAYOUT_NAMES.get(k, k): v for k, v in info["layout"].items()}
    lines = [
        f"features: {info['path']} ({n} slide file(s))",
        f"layout: {_join(layouts, n)}",
        f"written by: {_join(info['tool'], n)}",
        f"encoder: {_join(info['encoder'], n)}; dim {_join(info['feature_dim'], n)}; "
        f"{_join(info['dtype'], n)}",
        f"tiles per slide: min {t['min']}, median {t['median']:g}, max {t['max']} "
        f"({t['total']} in all)",
    ]
    units = {
        "px": "level-0 pixels (tile top-left)",
        "px centre": "level-0 pixels (tile centres)",
        "um": "microns (tile top-left)",
        "none": "none",
    }
    coords = (
        f"coordinates: {_join({units.get(k, k): v for k, v in info['coords_unit'].items()}, n)}"
    )
    if info["coords_level0_known"] < n:
        coords += (
            f"; tiles cannot be placed on the slide for {n - info['coords_level0_known']} of "
            f"{n} ({info['coords_note']})"
        )
    lines.append(coords)
    size = f"tile size: {_join(info['tile_size_level0'], n)} level-0 px"
    if set(info["tile_size_um"]) != {"unknown"}:
        size = f"tile size: {_join(info['tile_size_um'], n)} um, {size[11:]}"
    lines += [size, f"settings hash: {_join(info['settings_hash'], n)}"]
    if "not recorded" in info["encoder"]:
        lines.append("note: files that do not name their encoder can be given one with --encoder")
    return lines


def _model_lines(info: dict[str, Any]) -> list[str]:
    cohort, metrics, model = info["training_cohort"], info["metrics"], info["model"]
    settings = info["settings"]
    lines = [
        f"model: {info['path']} (mil-crcrs {info['package_version']}, {info['created']})",
        f"aggregator: {model.get('name')}, {info['n_folds']} fold models; loss "
        f"{settings.get('loss', '?')}, {settings.get('epochs', '?')} epochs at most, "
        f"seed {settings.get('seed', '?')}",
        f"features: encoder {info['encoder'] or 'not recorded'}, dim {info['feature_dim']}",
    ]
    if cohort:
        lines.append(
            f"trained on: {cohort.get('source')} ({cohort.get('n_patients')} patients, "
            f"{cohort.get('n_slides')} slides, {cohort.get('n_events')} events; median "
            f"follow-up {cohort.get('time_median', float('nan')):.4g} {info['time_unit']})"
        )
    if "harrell_c_mean" in metrics:
        lines.append(
            f"cross-validated Harrell C: {metrics['harrell_c_mean']:.3f} +- "
            f"{metrics.get('harrell_c_sd', float('nan')):.3f} over folds; pooled out-of-fold "
            f"{metrics.get('harrell_c_oof', float('nan')):.3f}"
        )
    if "validation" in metrics:
        v = metrics["validation"]
        lines.append(
            f"validation {v.get('source')}: Harrell C {v.get('harrell_c', float('nan')):.3f} "
            f"({v.get('n_patients')} patients, {v.get('n_events')} events)"
        )
    cutoff = info["cutoff"]
    if cutoff:
        lines.append(f"cutoff: {cutoff.get('value', float('nan')):.4g} ({cutoff.get('method')})")
    lines.append(f"run.log: {'yes' if info['has_run_log'] else 'no'}")
    return lines
