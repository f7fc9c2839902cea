"""A trained CRCRS model: the ensemble of fold models, its cutoff, and its model directory.

The CRCRS of a patient is a calibrated **mean over the fold models** of each model's
standardised risk::

    z_m(bag) = (risk_m(bag) - fold_offsets[m]) / fold_scales[m]
    crcrs    = ensemble_scale * mean_m z_m(bag) + ensemble_shift

- ``risk_m`` is model ``m``'s log-hazard-scale risk; ``fold_offsets[m]`` and ``fold_scales[m]``
  are the mean and sd of that risk over the patients model ``m`` was trained on (see
  :mod:`mil_crcrs.train.crossval`). A Cox partial likelihood pins down neither an additive constant nor
  a common spread, so raw risks of different fold models are not comparable; standardised,
  each is in sd units above the average patient it learnt from.
- A patient's **out-of-fold** CRCRS is ``z`` of the model that held them out (mean over seeds).
- The mean of M models that partly disagree spreads less than any one of them: with no signal,
  M independent opinions shrink by about ``1/sqrt(M)`` and the ensemble's scores bunch up
  around its centre, so a cutoff fixed on out-of-fold scores would put almost every new patient
  on one side. ``ensemble_scale`` and ``ensemble_shift`` undo that: they are set so that the
  ensemble's scores of the training cohort have the mean and sd of its out-of-fold scores. Out-of-fold
  scores, ensemble scores and the cutoff then share one scale, and the high share of a new
  cohort from the same population matches the training cohort's. The map is linear, so ranks and
  additive tile contributions are kept.

Model directories of format version 1 (centring only) load with scales of 1 and no calibration,
which is what they computed.

The model directory holds:

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
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mil_crcrs._version import __version__
from mil_crcrs.atomic import INCOMPLETE_MARK, atomic_dir, write_csv, write_json
from mil_crcrs.data.bags import PatientBag
from mil_crcrs.data.cache import CacheDtypeBags, to_cache_dtype
from mil_crcrs.data.cohort import Cohort, Columns, DataWarning
from mil_crcrs.data.inputs import open_inputs
from mil_crcrs.data.store import FeatureStore, write_attention_file
from mil_crcrs.device import resolve_device
from mil_crcrs.errors import InputError, first_line
from mil_crcrs.models import MILModel, create_model
from mil_crcrs.train.cutoff import Cutoff, risk_group
from mil_crcrs.train.loop import eval_batches
from mil_crcrs.train.standardize import FeatureNorm, has_feature_norm

MODEL_FORMAT = "mil_crcrs.model"
MODEL_FORMAT_VERSION = 2
CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"
OOF_NAME = "oof_predictions.csv"
VALIDATION_NAME = "validation_predictions.csv"


def _weights_name(k: int) -> str:
    return f"fold_{k}.pt"


class CRCRSModel:
    """The ensemble of fold models that computes the CRCRS, with its fixed cutoff.

    Parameters
    ----------
    fold_models : the K trained models (put in eval mode)
    offsets : (M,) each model's mean risk over its training part, subtracted before averaging
    cutoff : the high/low cutoff fixed on the training cohort
    scales : (M,) each model's risk sd over its training part (None = all 1)
    calibration : ``(ensemble_scale, ensemble_shift)`` applied to the mean of standardised risks
    feature_dim : feature dimension the models read
    encoder : the encoder named in the training feature files (None where they do not say)
    time_unit : unit of the training cohort's times
    settings : the fit settings (a ``FitSettings`` or its dict)
    training_cohort : a summary of the training cohort
    metrics : cross-validation metrics
    oof_predictions : the out-of-fold predictions of the training cohort
    validation_predictions : predictions of the validation cohort, if one was given

    Attributes
    ----------
    cutoff : float, the cutoff value (``cutoff_rule`` has how it was chosen)
    """

    def __init__(
        self,
        fold_models: Sequence[MILModel],
        offsets: Sequence[float],
        cutoff: Cutoff,
        *,
        scales: Sequence[float] | None = None,
        calibration: tuple[float, float] = (1.0, 0.0),
        feature_dim: int,
        encoder: str | None,
        time_unit: str = "days",
        settings: Any = None,
        training_cohort: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        oof_predictions: pd.DataFrame | None = None,
        validation_predictions: pd.DataFrame | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if len(fold_models) != len(offsets) or not fold_models:
            raise ValueError("need one offset per fold model, and at least one model")
        self.fold_models = list(fold_models)
        for model in self.fold_models:
            model.eval()
        self.offsets = [float(o) for o in offsets]
        self.scales = [1.0] * len(offsets) if scales is None else [float(v) for v in scales]
        if len(self.scales) != len(self.offsets) or not all(v > 0 for v in self.scales):
            raise ValueError("need one positive scale per fold model")
        self.calibration = (float(calibration[0]), float(calibration[1]))
        self.cutoff_rule = cutoff
        self.feature_dim = int(feature_dim)
        self.encoder = encoder
        self.time_unit = time_unit
        self.settings = settings
        self.training_cohort = dict(training_cohort or {})
        self.metrics = dict(metrics or {})
        self.oof_predictions = oof_predictions
        self.validation_predictions = validation_predictions
        self.extra = dict(extra or {})

    # -- what it is --------------------------------------------------------------------------------
    @property
    def cutoff(self) -> float:
        """Risk above which a patient is ``high``."""
        return float(self.cutoff_rule.value)

    @property
    def model_config(self) -> dict[str, Any]:
        """The fold models' ``create_model`` arguments (name and hyperparameters)."""
        return dict(self.fold_models[0].config)

    @property
    def config(self) -> dict[str, Any]:
        """Everything ``config.json`` records."""
        settings = self.settings
        if is_dataclass(settings):
            settings = asdict(settings)
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "package_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": self.model_config,
            "feature_dim": self.feature_dim,
            "encoder": self.encoder,
            "n_folds": _n_folds(settings, len(self.fold_models)),
            "n_models": len(self.fold_models),
            "weights": [_weights_name(k + 1) for k in range(len(self.fold_models))],
            "fold_offsets": self.offsets,
            "fold_scales": self.scales,
            "ensemble_scale": self.calibration[0],
            "ensemble_shift": self.calibration[1],
            "feature_norm": has_feature_norm(self.fold_models[0]),
            "ensemble": "crcrs = ensemble_scale * mean over models m of "
            "(risk_m - fold_offsets[m]) / fold_scales[m] + ensemble_shift",
            "time_unit": self.time_unit,
            "cutoff": self.cutoff_rule.to_dict(),
            "training_cohort": self.training_cohort,
            "settings": settings,
            **self.extra,
        }

    def __repr__(self) -> str:
        return (
            f"CRCRSModel({self.model_config.get('name')!r}, folds={len(self.fold_models)}, "
            f"feature_dim={self.feature_dim}, encoder={self.encoder!r}, cutoff={self.cutoff:.4g})"
        )

    @property
    def device(self) -> torch.device:
        """Where the fold models are (all on one device)."""
        return next(self.fold_models[0].parameters()).device

    def to(self, device: str | torch.device) -> CRCRSModel:
        """Move every fold model to ``device`` ("auto", "cpu", "cuda", "cuda:N"); returns self."""
        target = resolve_device(device)
        for model in self.fold_models:
            model.to(target)
        return self

    def _on(self, device: str | torch.device | None) -> torch.device:
        """The device to score on: the models' own, or ``device``, to which they then move."""
        return self.device if device is None else self.to(device).device

    # -- scoring ----------------------------------------------------------------------------------
    def risk(
        self,
        features: torch.Tensor,
        mask: torch.Tensor | None = None,
        grid: torch.Tensor | None = None,
        tiles: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The CRCRS of a padded batch, differentiable in ``features``.

        Parameters
        ----------
        features : (B, N, D) float on the fold models' device (see :attr:`device`)
        mask : (B, N) bool, True for a real tile (None = all real)
        grid : (B, N, 2) or, shared by every bag, (N, 2) long tile-grid positions (used by
            transmil), or None
        tiles : also return the mean attention and each tile's additive share of the CRCRS

        Returns
        -------
        crcrs : (B,) float64
        attention : (B, N) float64 mean attention of the fold models, or None
        contribution : (B, N) float64 tile shares, or None; they sum, with
            :meth:`contribution_baseline`, to ``crcrs`` (exactly for abmil and mean with a Cox
            loss, see ``MILModel.tile_contributions``)
        """
        if grid is not None and grid.ndim == 2:
            grid = grid.unsqueeze(0).expand(features.shape[0], -1, -1)
        gain = self.calibration[0] / len(self.fold_models)
        total = features.new_zeros(features.shape[0], dtype=torch.float64)
        attention = contribution = None
        for model, offset, scale in zip(self.fold_models, self.offsets, self.scales, strict=True):
            out = model(features, mask=mask, grid=grid)
            total = total + (out.risk.double() - offset) / scale
            if tiles:
                share = model.tile_contributions(features, mask, grid).double() * (gain / scale)
                weight = out.attention.double() / len(self.fold_models)
                contribution = share if contribution is None else contribution + share
                attention = weight if attention is None else attention + weight
        return total * gain + self.calibration[1], attention, contribution

    def contribution_baseline(self) -> float:
        """What the tile contributions of :meth:`risk` add up to short of the CRCRS:
        the fold models' head biases, standardised, averaged and calibrated (Cox models)."""
        terms = [
            (float(model.head.bias.detach()[0]) - offset) / scale
            for model, offset, scale in zip(
                self.fold_models, self.offsets, self.scales, strict=True
            )
        ]
        return self.calibration[0] * float(np.mean(terms)) + self.calibration[1]

    @torch.no_grad()
    def _score(
        self,
        bags: Sequence[PatientBag],
        batch_size: int,
        tiles: bool = False,
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Ensemble risk (n_bags,) and, with ``tiles``, per-bag attention and contributions,
        scored where the fold models are."""
        device = self.device
        risk = np.empty(len(bags), dtype=np.float64)
        attention: list[np.ndarray] = [np.empty(0)] * len(bags)
        contribution: list[np.ndarray] = [np.empty(0)] * len(bags)
        for positions, batch in eval_batches(bags, batch_size):
            batch = batch.to(device)
            crcrs, mean_attention, share = self.risk(
                batch.features, batch.mask, batch.grid, tiles=tiles
            )
            risk[positions] = crcrs.cpu().numpy()
            if mean_attention is not None and share is not None:
                mean_attention, share = mean_attention.cpu().numpy(), share.cpu().numpy()
                for row, pos in enumerate(positions):
                    n = bags[pos].n_tiles
                    attention[pos] = mean_attention[row, :n]
                    contribution[pos] = share[row, :n]
        return risk, attention, contribution

    def patient_attention(
        self, bag: PatientBag, device: str | torch.device | None = None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """One patient's CRCRS with per-tile attention and contributions, for heatmaps.

        Parameters
        ----------
        bag : the patient's tiles
        device : where to score: None where the model is, else the model moves there

        Returns
        -------
        crcrs : float
        attention : (n_tiles,) float64, the fold models' mean attention (sums to 1)
        contributions : (n_tiles,) float64, each tile's additive share of the CRCRS; for abmil
            and mean (Cox loss) ``contributions.sum() + contribution_baseline()`` equals
            ``crcrs`` exactly; for max and transmil it is an approximation (see
            ``MILModel.tile_contributions``)
        """
        bag = to_cache_dtype(bag)  # as the fit and predict() score it
        self._on(device)
        risk, attention, contribution = self._score([bag], 1, tiles=True)
        return float(risk[0]), attention[0], contribution[0]

    def predict(
        self,
        features: str | os.PathLike | Sequence[str | os.PathLike] | FeatureStore,
        clinical: str | os.PathLike | pd.DataFrame | Cohort | None = None,
        columns: Columns = Columns(),
        attention_dir: str | os.PathLike | None = None,
        *,
        time_unit: str | None = None,
        missing: str = "error",
        batch_size: int = 16,
        device: str | torch.device | None = None,
    ) -> pd.DataFrame:
        """The CRCRS and risk group of every patient.

        Parameters
        ----------
        features : a folder (or files, or a :class:`FeatureStore`) of feature files
        clinical : the cohort table (patients, slides, and optionally time and event); None means
            each feature file is one patient
        columns : the table's column names
        attention_dir : if given, write ``<attention_dir>/<slide_id>.h5`` per slide with datasets
            ``coords`` (n_tiles, 2) int64 level-0, ``attention`` (n_tiles,) float32 (normalised
            over all of the patient's tiles) and ``contribution`` (n_tiles,) float32
        time_unit : unit of the table's times (default: the training unit)
        missing : "error" or "warn" for slides in the table without a feature file
        batch_size : bags per forward pass
        device : where to score ("auto", "cpu", "cuda", "cuda:N"): None where the model is,
            else the model moves there

        Returns
        -------
        DataFrame with one row per patient: the patient id (under the table's own name for it,
        e.g. ``case_id``; ``patient_id`` without a table), ``crcrs``, ``risk_group``, and
        ``time``, ``event`` when the table has them.

        Raises
        ------
        InputError
            Features of another dimension or encoder than the model was trained on, or any
            problem with the table or the files.
        """
        if batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {batch_size}")
        inputs = open_inputs(
            features, clinical, columns, time_unit or self.time_unit, missing=missing
        )
        store, cohort = inputs.store, inputs.cohort
        # Read as the fit's bag cache holds them, so a patient scores as in the fit.
        bags = CacheDtypeBags(inputs.bags)
        self.check_features(bags.feature_dim, bags.encoder, str(features))
        self._on(device)
        risk, attention, contribution = self._score(
            bags, batch_size, tiles=attention_dir is not None
        )
        table = pd.DataFrame(
            {
                cohort.id_column: cohort.patient_ids,
                "crcrs": risk,
                "risk_group": risk_group(risk, self.cutoff_rule),
            }
        )
        if cohort.has_outcome:
            table["time"] = cohort.time
            table["event"] = cohort.event
        if attention_dir is not None:
            _warn_unknown_coords(store, [s for p in cohort.patient_ids for s in cohort.slides[p]])
            for i in range(len(bags)):
                bag = bags[i]
                _write_attention(
                    Path(attention_dir),
                    bag,
                    risk[i],
                    table["risk_group"].iloc[i],
                    attention[i],
                    contribution[i],
                    self.encoder,
                )
        return table

    def check_features(self, feature_dim: int, encoder: str | None, source: str) -> None:
        """Raise :class:`InputError` unless features match what the model was trained on."""
        if feature_dim != self.feature_dim:
            raise InputError(
                f"{source}: features have dim {feature_dim} but the model was trained on dim "
                f"{self.feature_dim} (encoder {self.encoder!r}); extract with the same encoder"
            )
        if encoder and self.encoder and encoder != self.encoder:
            raise InputError(
                f"{source}: features come from encoder {encoder!r} but the model was trained on "
                f"{self.encoder!r}; extract with the same encoder"
            )
        if bool(encoder) != bool(self.encoder):
            said = (
                f"features in {source} do not name their encoder; the model was trained on "
                f"'{self.encoder}' features (pass --encoder to say which made them)"
                if self.encoder
                else f"the model does not record its encoder; features in {source} come from "
                f"'{encoder}'"
            )
            warnings.warn(
                f"{said}: scoring them as the same encoder's features", DataWarning, stacklevel=2
            )

    # -- the model directory ----------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model directory; returns its path.

        The files are written into a temporary folder beside ``directory``, renamed into place
        when complete (:func:`~mil_crcrs.atomic.atomic_dir`): a killed save leaves no folder that
        :meth:`load` would accept. An earlier model there is replaced; files that are not part
        of a model directory are kept.
        """
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise InputError(f"{directory}: exists and is not a folder")
        with atomic_dir(directory, keep=lambda name: not _is_model_file(name)) as tmp:
            self._write_files(tmp)
        return directory

    def _write_files(self, directory: Path) -> None:
        for k, model in enumerate(self.fold_models, start=1):
            state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
            torch.save(state, directory / _weights_name(k))
        write_json(directory / METRICS_NAME, self.metrics)
        if self.oof_predictions is not None:
            write_csv(directory / OOF_NAME, self.oof_predictions)
        if self.validation_predictions is not None:
            write_csv(directory / VALIDATION_NAME, self.validation_predictions)
        write_json(directory / CONFIG_NAME, self.config)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> CRCRSModel:
        """Read a model directory written by :meth:`save`.

        Weights are read with ``torch.load(weights_only=True)``: a file holding anything but
        tensors is refused, never executed.

        Raises
        ------
        InputError
            A missing folder, a folder that is not a model directory, a newer format, or weights
            that do not fit the recorded model.
        """
        directory = Path(directory)
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
        needed = ("model", "weights", "fold_offsets", "feature_dim", "cutoff")
        absent = [key for key in needed if key not in config]
        if absent:
            raise InputError(f"{config_path}: missing {', '.join(absent)}")
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
        known = {
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
        }
        metrics = {}
        if (directory / METRICS_NAME).is_file():
            metrics = json.loads((directory / METRICS_NAME).read_text())
        oof = _read_optional_csv(directory / OOF_NAME)
        validation = _read_optional_csv(directory / VALIDATION_NAME)
        try:
            return cls(
                models,
                config["fold_offsets"],
                Cutoff.from_dict(config["cutoff"]),
                scales=config.get("fold_scales"),
                calibration=(config.get("ensemble_scale", 1.0), config.get("ensemble_shift", 0.0)),
                feature_dim=config["feature_dim"],
                encoder=config.get("encoder"),
                time_unit=config.get("time_unit", "days"),
                settings=_settings_from_dict(config.get("settings")),
                training_cohort=config.get("training_cohort"),
                metrics=metrics,
                oof_predictions=oof,
                validation_predictions=validation,
                extra={k: v for k, v in config.items() if k not in known},
            )
        except (ValueError, TypeError) as exc:
            raise InputError(f"{config_path}: {exc}") from None


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> CRCRSModel:
    """Read a model directory: the same as :meth:`CRCRSModel.load`."""
    return CRCRSModel.load(directory, device=device)


def _is_model_file(name: str) -> bool:
    """Whether ``name`` is one of the files :meth:`CRCRSModel.save` writes."""
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


def _n_folds(settings: Any, n_models: int) -> int:
    """K of the cross-validation, from the settings (dict or dataclass); else one per model."""
    folds = settings.get("folds") if isinstance(settings, Mapping) else None
    return int(folds) if isinstance(folds, int) else n_models


def _read_optional_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    id_column = pd.read_csv(path, nrows=0).columns[0]  # patient_id, or the table's own name
    return pd.read_csv(path, dtype={id_column: str})


def _warn_unknown_coords(store: FeatureStore, slide_ids: Sequence[str]) -> None:
    """One warning for the slides whose attention files cannot say where the tiles are."""
    unknown = [s for s in slide_ids if not store.info(s).has_coords]
    if unknown:
        warnings.warn(
            f"{len(unknown)} of {len(slide_ids)} slide(s) have no level-0 tile coordinates "
            f"(e.g. {unknown[0]}: {store.info(unknown[0]).coords_note}); their attention files "
            "hold coords -1 and no heatmap can be drawn from them",
            DataWarning,
            stacklevel=3,
        )


def _settings_from_dict(data: Mapping[str, Any] | None) -> Any:
    if data is None:
        return None
    from mil_crcrs.train.fit import FitSettings

    fields = FitSettings.__dataclass_fields__
    try:
        return FitSettings(**{k: v for k, v in data.items() if k in fields})
    except (InputError, TypeError):
        return dict(data)


def _write_attention(
    folder: Path,
    bag: PatientBag,
    crcrs: float,
    group: str,
    attention: np.ndarray,
    contribution: np.ndarray,
    encoder: str | None,
) -> None:
    """One HDF5 file per slide of ``bag``, each written atomically."""
    for k, slide_id in enumerate(bag.slide_ids):
        rows = bag.tile_slide == k
        note = bag.coords_notes[k] if k < len(bag.coords_notes) else ""
        attrs = {
            "coords_known": not note,
            "slide_id": slide_id,
            "patient_id": bag.patient_id,
            "crcrs": float(crcrs),
            "risk_group": str(group),
            "encoder": encoder or "",
            "package_version": __version__,
            "note": "attention is normalised over all of the patient's tiles "
            "(all slides); contribution is each tile's additive share of the risk",
        }
        if note:
            attrs["coords_note"] = f"coords are -1: {note}"
        write_attention_file(
            folder / f"{slide_id}.h5", bag.coords[rows], attention[rows], contribution[rows], attrs
        )
