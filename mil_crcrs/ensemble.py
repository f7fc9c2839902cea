"""A trained CRCRS model: the ensemble of fold models, its cutoff, and its model directory.

The CRCRS of a patient is a calibrated **mean over the fold models** of each model's
standardised risk::

    z_m(bag) = (risk_m(bag) - fold_offsets[m]) / fold_scales[m]
    crcrs    = ensemble_scale * mean_m z_m(bag) + ensemble_shift

``risk_m`` is model ``m``'s log-hazard-scale risk; ``fold_offsets[m]`` and ``fold_scales[m]``
are its mean and sd over the patients it was trained on (:mod:`mil_crcrs.train.crossval`): a Cox
likelihood fixes neither the centre nor the spread of a model's risk. A patient's out-of-fold
CRCRS is ``z`` of the model that held them out. The mean of models that partly disagree bunches
up around its centre; ``ensemble_scale`` and ``ensemble_shift`` give the ensemble's scores of the
training cohort the mean and sd of its out-of-fold scores, so that the cutoff fixed on those
splits new patients as it split the training cohort (:mod:`mil_crcrs.fitting` says why). The
map is linear: ranks and additive tile contributions are kept. The model is saved as, and
loaded from, a model directory (:mod:`mil_crcrs.model_dir`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mil_crcrs.contributions import contribution_reference, fold_contributions
from mil_crcrs.data.attention import write_attention_files
from mil_crcrs.data.bags import PatientBag
from mil_crcrs.data.cache import CacheDtypeBags, to_cache_dtype
from mil_crcrs.data.cohort import Cohort, DataWarning
from mil_crcrs.data.inputs import check_same_features, open_inputs
from mil_crcrs.data.store import FeatureStore
from mil_crcrs.data.tables import Columns
from mil_crcrs.device import resolve_device
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.model_dir import (
    CONFIG_NAME,
    ModelFiles,
    config_record,
    ensemble_arguments,
    read_model_dir,
    write_model_dir,
)
from mil_crcrs.models import MILModel
from mil_crcrs.train.batches import eval_batches
from mil_crcrs.train.cutoff import Cutoff, risk_group

#: Bags per forward pass of :meth:`CRCRSModel.predict` unless told.
PREDICT_BATCH_SIZE = 16


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
        """Everything ``config.json`` records (:func:`mil_crcrs.model_dir.config_record`)."""
        return config_record(
            self.fold_models,
            offsets=self.offsets,
            cutoff=self.cutoff_rule,
            scales=self.scales,
            calibration=self.calibration,
            feature_dim=self.feature_dim,
            encoder=self.encoder,
            time_unit=self.time_unit,
            settings=self.settings,
            training_cohort=self.training_cohort,
            extra=self.extra,
        )

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

    def _move_if_asked(self, device: str | torch.device | None) -> None:
        """Score where the models are (None), or move them to ``device`` first."""
        if device is not None:
            self.to(device)

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
        tiles : also return the mean attention and each tile's contribution

        Returns
        -------
        crcrs : (B,) float64
        attention : (B, N) float64 mean attention of the fold models, or None
        contribution : (B, N) float64 each tile's contribution against
            :attr:`contribution_reference`, or None: ``reference + contribution.sum(1) = crcrs``
            for every bag and every model (:mod:`mil_crcrs.contributions`)
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
                weight = out.attention.double()
                share = fold_contributions(model, features, mask, grid, out.risk, weight, offset)
                share = share * (gain / scale)
                contribution = share if contribution is None else contribution + share
                weight = weight / len(self.fold_models)
                attention = weight if attention is None else attention + weight
        if contribution is not None and attention is not None:
            shift = self.contribution_reference - self.calibration[1]  # spread by attention
            contribution = contribution - attention * shift
        return total * gain + self.calibration[1], attention, contribution

    @property
    def contribution_reference(self) -> float:
        """The CRCRS that tile contributions are measured against: the training cohort's mean
        CRCRS (:func:`mil_crcrs.contributions.contribution_reference`)."""
        parts = self.training_cohort, self.metrics, self.oof_predictions, self.calibration[1]
        return contribution_reference(*parts)

    @torch.no_grad()
    def _score(
        self, bags: Sequence[PatientBag], batch_size: int, tiles: bool = False
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
        if not np.isfinite(risk).all():  # an error, never a risk group
            bad = bags[int(np.argmax(~np.isfinite(risk)))].patient_id
            raise InputError(f"patient {bad!r} scores a non-finite CRCRS (features out of range?)")
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
        contributions : (n_tiles,) float64, each tile's contribution against
            :attr:`contribution_reference`: ``contribution_reference + contributions.sum()``
            equals ``crcrs``
        """
        bag = to_cache_dtype(bag)  # as the fit and predict() score it
        self._move_if_asked(device)
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
        batch_size: int = PREDICT_BATCH_SIZE,
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
            over all of the patient's tiles) and ``contribution`` (n_tiles,) float32, with the
            ``contribution_reference`` attribute they are measured against
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
            raise SettingError("batch_size", f"must be at least 1, got {batch_size}")
        inputs = open_inputs(
            features, clinical, columns, time_unit or self.time_unit, missing=missing
        )
        store, cohort = inputs.store, inputs.cohort
        # Read as the fit's bag cache holds them, so a patient scores as in the fit.
        bags = CacheDtypeBags(inputs.bags)
        self.check_features(bags.feature_dim, bags.encoder, str(features))
        self._move_if_asked(device)
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
            slides = [s for p in cohort.patient_ids for s in cohort.slides[p]]
            groups = table["risk_group"].tolist()
            files = Path(attention_dir), store, slides
            parts = attention, contribution, self.encoder, self.contribution_reference
            write_attention_files(*files, bags, risk, groups, *parts)
        return table

    def check_features(self, feature_dim: int, encoder: str | None, source: str) -> None:
        """Raise :class:`InputError` unless features match what the model was trained on."""
        check_same_features(source, feature_dim, encoder, (self.feature_dim, self.encoder))
        if bool(encoder) != bool(self.encoder):
            said = (
                f"features in {source} do not name their encoder; the model was trained on "
                f"'{self.encoder}' features (say which encoder made them with --encoder)"
                if self.encoder
                else f"the model does not record its encoder; features in {source} come from "
                f"'{encoder}'"
            )
            warnings.warn(
                f"{said}: scoring them as the same encoder's features", DataWarning, stacklevel=2
            )

    # -- the model directory ----------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the model directory (:func:`mil_crcrs.model_dir.write_model_dir`); returns its
        path. A killed save leaves no folder that :meth:`load` would accept."""
        tables = self.oof_predictions, self.validation_predictions
        files = ModelFiles(self.fold_models, self.config, self.metrics, *tables)
        return write_model_dir(directory, files)

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> CRCRSModel:
        """Read a model directory written by :meth:`save`, fold models on ``device``; any
        problem is an :class:`InputError` naming its file (pickled code is never run, values
        are checked: :func:`mil_crcrs.model_dir.read_model_dir`)."""
        files = read_model_dir(directory, device)
        try:
            return cls(
                files.fold_models,
                metrics=files.metrics,
                oof_predictions=files.oof_predictions,
                validation_predictions=files.validation_predictions,
                **ensemble_arguments(files.config),
            )
        except (ValueError, TypeError) as exc:
            raise InputError(f"{Path(directory) / CONFIG_NAME}: {exc}") from None


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> CRCRSModel:
    """Read a model directory: the same as :meth:`CRCRSModel.load`."""
    return CRCRSModel.load(directory, device=device)
