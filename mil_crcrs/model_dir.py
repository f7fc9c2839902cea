"""The model directory: the files a trained :class:`~mil_crcrs.ensemble.CRCRSModel` is saved as.

This module knows the directory's layout and checks it on reading; what the numbers mean is
:mod:`mil_crcrs.ensemble`'s. The model directory holds:

- ``config.json``: format and package version, the model's name and hyperparameters, feature
  dim and encoder, the fit settings, time unit, fold offsets, the cutoff and how it was chosen,
  and a summary of the training cohort;
- ``fold_<k>.pt`` (k = 1..K): each fold model's weights as a plain ``state_dict``, read back with
  ``torch.load(weights_only=True)`` so that loading never runs pickled code; with
  ``feature_norm`` true in ``config.json`` it also holds the fold's feature standardisation,
  ``input_norm.mean`` and ``input_norm.sd`` (see :mod:`mil_crcrs.train.standardize`);
- ``metrics.json``: the cross-validated Harrell C (and the validation cohort's, if any);
- ``oof_predictions.csv``: the out-of-fold CRCRS of every training patient
  (``validation_predictions.csv`` too when a validation cohort was given).

Model directories of format version 1 (centring only) load with scales of 1 and no calibration,
which is what they computed. :func:`write_patient_attention` writes the per-slide attention files
of ``predict(attention_dir=...)``, through :func:`mil_crcrs.data.store.write_attention_file`.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mil_crcrs._version import __version__
from mil_crcrs.atomic import INCOMPLETE_MARK, atomic_dir, write_csv, write_json
from mil_crcrs.data.bags import PatientBag
from mil_crcrs.data.cohort import DataWarning
from mil_crcrs.data.store import FeatureStore, write_attention_file
from mil_crcrs.device import resolve_device
from mil_crcrs.errors import InputError, first_line
from mil_crcrs.models import MILModel, create_model
from mil_crcrs.train.cutoff import Cutoff
from mil_crcrs.train.settings import settings_from_record
from mil_crcrs.train.standardize import FeatureNorm, has_feature_norm

MODEL_FORMAT = "mil_crcrs.model"
MODEL_FORMAT_VERSION = 2
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
OOF_NAME = "oof_predictions.csv"
VALIDATION_NAME = "validation_predictions.csv"
#: The keys ``config.json`` holds by design; any other is kept as the model's ``extra``.
CONFIG_KEYS = (
    "format",
    "format_version",
    "package_version",
    "created",
    "model",
    "feature_dim",
    "encoder",
    "n_folds",
    "n_models",
    "weights",
    "fold_offsets",
    "fold_scales",
    "ensemble_scale",
    "ensemble_shift",
    "feature_norm",
    "ensemble",
    "time_unit",
    "cutoff",
    "training_cohort",
    "settings",
)
#: The keys without which ``config.json`` describes no model.
REQUIRED_KEYS = ("model", "weights", "fold_offsets", "feature_dim", "cutoff")


def weights_name(k: int) -> str:
    """The weights file of the ``k``-th (1-based) fold model."""
    return f"fold_{k}.pt"


@dataclass
class ModelFiles:
    """What a model directory holds, as read or to be written.

    Attributes
    ----------
    fold_models : the fold models, weights loaded (in eval mode after reading)
    config : ``config.json`` (see :attr:`mil_crcrs.ensemble.CRCRSModel.config`)
    metrics : ``metrics.json``
    oof_predictions, validation_predictions : the two CSV tables, or None
    """

    fold_models: Sequence[MILModel]
    config: dict[str, Any]
    metrics: dict[str, Any]
    oof_predictions: pd.DataFrame | None = None
    validation_predictions: pd.DataFrame | None = None


def write_model_dir(directory: str | os.PathLike, files: ModelFiles) -> Path:
    """Write the model directory; returns its path.

    The files are written into a temporary folder beside ``directory``, renamed into place
    when complete (:func:`~mil_crcrs.atomic.atomic_dir`): a killed save leaves no folder that
    :func:`read_model_dir` would accept. An earlier model there is replaced; files that are not
    part of a model directory are kept.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory}: exists and is not a folder")
    with atomic_dir(directory, keep=lambda name: not is_model_file(name)) as tmp:
        for k, model in enumerate(files.fold_models, start=1):
            state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
            torch.save(state, tmp / weights_name(k))
        write_json(tmp / METRICS_NAME, files.metrics)
        if files.oof_predictions is not None:
            write_csv(tmp / OOF_NAME, files.oof_predictions)
        if files.validation_predictions is not None:
            write_csv(tmp / VALIDATION_NAME, files.validation_predictions)
        write_json(tmp / CONFIG_NAME, files.config)
    return directory


def read_model_dir(directory: str | os.PathLike, device: str | torch.device = "cpu") -> ModelFiles:
    """Read a model directory written by :func:`write_model_dir`, fold models on ``device``.

    Weights are read with ``torch.load(weights_only=True)``: a file holding anything but
    tensors is refused, never executed.

    Raises
    ------
    InputError
        A missing folder, a folder that is not a model directory, a newer format, or weights
        that do not fit the recorded model.
    """
    directory = Path(directory)
    config = read_config(directory)
    config_path = directory / CONFIG_NAME
    device = resolve_device(device)
    models = []
    for name in config["weights"]:
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise InputError(f"{config_path}: weights {name!r} is not a file in {directory}")
        model = create_model(**config["model"])
        if config.get("feature_norm"):  # filled from input_norm.mean/.sd in the weights
            model.input_norm = FeatureNorm.placeholder(int(config["feature_dim"]))
        model.load_state_dict(_load_state(directory / name, model))
        models.append(model.to(device).eval())
    metrics = {}
    if (directory / METRICS_NAME).is_file():
        metrics = json.loads((directory / METRICS_NAME).read_text())
    return ModelFiles(
        models,
        config,
        metrics,
        _read_optional_csv(directory / OOF_NAME),
        _read_optional_csv(directory / VALIDATION_NAME),
    )


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of the model directory ``directory``, checked: a mil-crcrs model of a
    format this version reads, with every key a model needs."""
    if not directory.is_dir():
        raise InputError(f"{directory}: no such model directory")
    if INCOMPLETE_MARK in directory.name:
        raise InputError(
            f"{directory}: an incomplete model directory (a fit was killed while saving it); "
            "fit again"
        )
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise InputError(f"{directory}: not a mil-crcrs model directory (no {CONFIG_NAME})")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise InputError(f"{config_path}: not a mil-crcrs model config")
    version = config.get("format_version")
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        raise InputError(
            f"{directory}: model format version {version} is newer than this mil-crcrs "
            f"({__version__}) reads (up to {MODEL_FORMAT_VERSION}); upgrade mil-crcrs"
        )
    absent = [key for key in REQUIRED_KEYS if key not in config]
    if absent:
        raise InputError(f"{config_path}: missing {', '.join(absent)}")
    return config


def config_record(
    fold_models: Sequence[MILModel],
    *,
    offsets: Sequence[float],
    cutoff: Cutoff,
    scales: Sequence[float],
    calibration: tuple[float, float],
    feature_dim: int,
    encoder: str | None,
    time_unit: str,
    settings: Any,
    training_cohort: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """``config.json`` of an ensemble (the arguments of
    :class:`~mil_crcrs.ensemble.CRCRSModel`); :func:`ensemble_arguments` reads them back."""
    if is_dataclass(settings):
        settings = asdict(settings)
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "package_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": dict(fold_models[0].config),
        "feature_dim": feature_dim,
        "encoder": encoder,
        "n_folds": _n_folds(settings, len(fold_models)),
        "n_models": len(fold_models),
        "weights": [weights_name(k + 1) for k in range(len(fold_models))],
        "fold_offsets": list(offsets),
        "fold_scales": list(scales),
        "ensemble_scale": calibration[0],
        "ensemble_shift": calibration[1],
        "feature_norm": has_feature_norm(fold_models[0]),
        "ensemble": "crcrs = ensemble_scale * mean over models m of "
        "(risk_m - fold_offsets[m]) / fold_scales[m] + ensemble_shift",
        "time_unit": time_unit,
        "cutoff": cutoff.to_dict(),
        "training_cohort": training_cohort,
        "settings": settings,
        **extra,
    }


def ensemble_arguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~mil_crcrs.ensemble.CRCRSModel` arguments that ``config.json`` records (all
    but the fold models and the other files); keys it does not know by design go to ``extra``.

    Raises
    ------
    ValueError, TypeError
        A recorded value of the wrong kind (a bad cutoff, non-positive scales ...).
    """
    return {
        "offsets": config["fold_offsets"],
        "cutoff": Cutoff.from_dict(config["cutoff"]),
        "scales": config.get("fold_scales"),
        "calibration": (config.get("ensemble_scale", 1.0), config.get("ensemble_shift", 0.0)),
        "feature_dim": config["feature_dim"],
        "encoder": config.get("encoder"),
        "time_unit": config.get("time_unit", "days"),
        "settings": settings_from_record(config.get("settings")),
        "training_cohort": config.get("training_cohort"),
        "extra": {k: v for k, v in config.items() if k not in CONFIG_KEYS},
    }


def _n_folds(settings: Any, n_models: int) -> int:
    """K of the cross-validation, from the settings (dict or dataclass); else one per model."""
    folds = settings.get("folds") if isinstance(settings, Mapping) else None
    return int(folds) if isinstance(folds, int) else n_models


def is_model_file(name: str) -> bool:
    """Whether ``name`` is one of the files :func:`write_model_dir` writes."""
    fixed = (CONFIG_NAME, METRICS_NAME, OOF_NAME, VALIDATION_NAME)
    return name in fixed or (name.startswith("fold_") and name.endswith(".pt"))


def _load_state(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"{path}: missing weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{path}: refused to load, the file holds more than plain tensors ({first_line(exc)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable weights file ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a state_dict of tensors")
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise InputError(
            f"{path}: the weights do not fit the model recorded in {CONFIG_NAME} "
            f"({type(model).__name__})"
        )
    return state


def _read_optional_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    id_column = pd.read_csv(path, nrows=0).columns[0]  # patient_id, or the table's own name
    return pd.read_csv(path, dtype={id_column: str})


def write_attention_files(
    folder: Path,
    store: FeatureStore,
    slide_ids: Sequence[str],
    bags: Sequence[PatientBag],
    crcrs: np.ndarray,
    groups: Sequence[str],
    attention: Sequence[np.ndarray],
    contribution: Sequence[np.ndarray],
    encoder: str | None,
    reference: float = float("nan"),
) -> None:
    """The attention files of ``predict(attention_dir=folder)``: one per slide of ``slide_ids``
    (those of ``bags``), each written atomically.

    Parameters
    ----------
    store : the feature files (to warn once about slides without tile coordinates)
    bags : the patients; ``crcrs`` (n,), ``groups`` (n,) and the per-bag arrays ``attention``
        and ``contribution`` (n_tiles,) are aligned with them
    encoder : the model's encoder, recorded in every file
    reference : the CRCRS the contributions are measured against, recorded in every file
    """
    _warn_unknown_coords(store, slide_ids)
    for i in range(len(bags)):
        parts = attention[i], contribution[i]
        _write_patient_attention(folder, bags[i], (crcrs[i], reference), groups[i], *parts, encoder)


def _warn_unknown_coords(store: FeatureStore, slide_ids: Sequence[str]) -> None:
    """One warning for the slides whose attention files cannot say where the tiles are."""
    unknown = [s for s in slide_ids if not store.info(s).has_coords]
    if unknown:
        warnings.warn(
            f"{len(unknown)} of {len(slide_ids)} slide(s) have no level-0 tile coordinates "
            f"(e.g. {unknown[0]}: {store.info(unknown[0]).coords_note}); their attention files "
            "hold coords -1 and no heatmap can be drawn from them",
            DataWarning,
            stacklevel=4,
        )


def _write_patient_attention(
    folder: Path,
    bag: PatientBag,
    crcrs: tuple[float, float],
    group: str,
    attention: np.ndarray,
    contribution: np.ndarray,
    encoder: str | None,
) -> None:
    """One HDF5 file per slide of ``bag``, each written atomically; ``crcrs`` is the patient's
    CRCRS and the reference its contributions are measured against."""
    for k, slide_id in enumerate(bag.slide_ids):
        rows = bag.tile_slide == k
        note = bag.coords_notes[k] if k < len(bag.coords_notes) else ""
        attrs = {
            "coords_known": not note,
            "slide_id": slide_id,
            "patient_id": bag.patient_id,
            "crcrs": float(crcrs[0]),
            "contribution_reference": float(crcrs[1]),
            "risk_group": str(group),
            "encoder": encoder or "",
            "package_version": __version__,
            "note": "attention is normalised over all of the patient's tiles "
            "(all slides); contribution is each tile's share of crcrs - contribution_reference "
            "(the training cohort's mean CRCRS): positive raises the risk above it",
        }
        if note:
            attrs["coords_note"] = f"coords are -1: {note}"
        write_attention_file(
            folder / f"{slide_id}.h5", bag.coords[rows], attention[rows], contribution[rows], attrs
        )
