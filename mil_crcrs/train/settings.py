"""``FitSettings``: how a fit trains, the one frozen dataclass of ``crcrs fit``.

Every field is checked here (types by :func:`coerce_setting`, ranges and choices in
``FitSettings.__post_init__``); a bad value is a :class:`~mil_crcrs.errors.SettingError` naming
the field. The choice lists (:data:`SCHEDULES`, :data:`MONITORS`, ``LOSS_NAMES``, ``TIES``,
``CUTOFF_METHODS`` ...) are the library's own; :func:`setting_choices` hands them to the CLI. The
helpers below (:func:`setting_fields`, :func:`setting_default`, :func:`setting_types`,
:func:`setting_docs`) read the dataclass itself, so the CLI and settings files
(:mod:`mil_crcrs.train.config`) never keep a second copy of a default or a type.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from mil_crcrs.data.cache import RESIDENT_CHOICES
from mil_crcrs.device import check_device
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.models import list_models, model_options
from mil_crcrs.train.cutoff import CUTOFF_METHODS
from mil_crcrs.train.losses import LOSS_NAMES, TIES

#: How the learning rate is scheduled over the steps of a fold model's training.
SCHEDULES = ("cosine", "onecycle")
#: What early stopping watches on the inner split: Harrell's C, or the training loss.
MONITORS = ("c", "loss")
#: ``FitSettings.precision``: the autocast dtype of training steps (None = full precision);
#: "auto" is resolved per device by :func:`training_autocast`.
PRECISIONS = {"auto": None, "fp32": None, "bf16": torch.bfloat16}


def training_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training steps for ``FitSettings.precision`` on ``device``.

    "auto" is bf16 on a CUDA device that supports it and full precision elsewhere: bf16
    autocast moved the out-of-fold C by +0.0002 (standard error 0.0002, five cohorts;
    ``benchmarks/precision_c.py``), and a CPU without bf16 matrix units gains no speed from it.
    """
    if precision != "auto":
        return PRECISIONS[precision]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def setting_choices() -> dict[str, tuple[str, ...]]:
    """The settings whose value comes from a fixed list, with that list (device aside: see
    :data:`mil_crcrs.device.DEVICES`, which also takes ``cuda:N``)."""
    return {
        "model": tuple(list_models()),
        "schedule": SCHEDULES,
        "loss": LOSS_NAMES,
        "ties": TIES,
        "monitor": MONITORS,
        "cutoff": CUTOFF_METHODS,
        "resident": RESIDENT_CHOICES,
        "precision": tuple(PRECISIONS),
    }


@dataclass(frozen=True)
class FitSettings:
    """How :func:`~mil_crcrs.fitting.fit` trains; saved in the model directory's ``config.json``.

    Parameters
    ----------
    model : registered aggregator name ("abmil", "mean", "max", "transmil")
    model_kwargs : the aggregator's own hyperparameters (e.g. ``hidden_dim``, ``dropout``)
    folds : K of the K-fold cross-validation (at least 2)
    epochs : the most epochs per fold model
    batch_size : the smallest number of bags per optimiser step (the Cox risk set)
    lr : AdamW's (peak) learning rate
    weight_decay : AdamW's decoupled weight decay
    schedule : "cosine" or "onecycle", stepped per batch
    clip_norm : gradient-norm clip (0 = none)
    max_tiles : random subset of at most this many tiles per bag in training (None = all);
        prediction always uses every tile
    standardize : standardise each feature dimension, ``(x - mean) / sd``, with mean and sd
        pooled over the tiles of each fold's training part (see :mod:`mil_crcrs.train.standardize`);
        the statistics are stored in every fold model and applied wherever it is used
    loss : "cox" (partial likelihood) or "discrete" (discrete-time hazards)
    ties : "efron" or "breslow", for the Cox loss
    n_bins : number of time bins of the discrete-time loss
    inner_val_fraction : share of each fold's training part held out for early stopping (0 =
        train every epoch, no early stopping)
    patience : stop after this many epochs without a better (smoothed) monitored value
    monitor : what early stopping watches on the inner split: "c" (Harrell's C) or "loss" (the
        training loss over the whole inner split: the Cox partial likelihood, or the
        discrete-time likelihood)
    min_epochs : no epoch before this one is kept or counts towards ``patience``
    smooth_epochs : compare the mean of the monitored value over this many last epochs
    average_epochs : keep the average of the weights of this many last epochs up to the chosen
        one (1 = that epoch's own weights); see :class:`~mil_crcrs.train.early_stopping.EarlyStopping`
    cutoff : "median" or "maxstat" (each group at least 10% of patients)
    seed : seeds folds, initialisation, shuffling, subsampling and dropout
    seeds : repeated cross-validation: one full K-fold run per seed (its own folds and
        training randomness); empty = ``(seed,)``. C is reported as mean and sd over seeds and
        folds, each patient's out-of-fold CRCRS is the mean over seeds, and the delivered
        ensemble holds every model
    device : "auto", "cpu", "cuda" or "cuda:N"
    progress : show progress: bars on a terminal, one plain line per step (with the time left)
        when stderr is a file; False prints results and warnings only
    cache_gb : memory for the bag cache in GiB; bags beyond it are streamed from disk (none =
        half the available memory; see mil_crcrs.data.cache)
    resident : "auto" (the whole cohort on the GPU, once, when it fits), "on" or "off"; see
        mil_crcrs.data.packed
    precision : precision of the training steps: "auto" (bf16 autocast on a GPU, fp32 on the
        CPU), "fp32" or "bf16"; prediction is fp32 in every case
    """

    model: str = "abmil"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    folds: int = 5
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    clip_norm: float = 1.0
    max_tiles: int | None = None
    standardize: bool = False
    loss: str = "cox"
    ties: str = "efron"
    n_bins: int = 4
    inner_val_fraction: float = 0.2
    patience: int = 10
    monitor: str = "c"
    min_epochs: int = 1
    smooth_epochs: int = 1
    average_epochs: int = 1
    cutoff: str = "median"
    seed: int = 0
    seeds: tuple[int, ...] = ()
    device: str = "auto"
    progress: bool = True
    cache_gb: float | None = None
    resident: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name in setting_fields():  # types first: a list of seeds becomes a tuple, 1 -> 1.0
            object.__setattr__(self, name, coerce_setting(name, getattr(self, name)))
        check_device(self.device)
        for name, allowed in setting_choices().items():
            if getattr(self, name) not in allowed:
                raise SettingError(
                    name, f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        at_least = {
            "folds": 2,
            "epochs": 1,
            "batch_size": 2,
            "n_bins": 2,
            "patience": 1,
            "min_epochs": 1,
            "smooth_epochs": 1,
            "average_epochs": 1,
        }
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise SettingError(name, f"must be at least {low}, got {getattr(self, name)}")
        if self.max_tiles is not None and self.max_tiles < 1:
            raise SettingError("max_tiles", f"must be at least 1 (or none), got {self.max_tiles}")
        if self.cache_gb is not None and not self.cache_gb >= 0:
            raise SettingError("cache_gb", f"must be >= 0 (or none), got {self.cache_gb}")
        if not self.lr > 0:
            raise SettingError("lr", f"must be positive, got {self.lr}")
        for name in ("weight_decay", "clip_norm"):
            if not getattr(self, name) >= 0:
                raise SettingError(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.inner_val_fraction < 0.5:
            raise SettingError(
                "inner_val_fraction", f"must be in [0, 0.5), got {self.inner_val_fraction}"
            )
        if (
            self.seed < 0
            or any(s < 0 for s in self.seeds)
            or len(set(self.seeds)) < len(self.seeds)
        ):
            raise SettingError("seeds", f"must be distinct non-negative integers, got {self.seeds}")
        reserved = {"name", "in_dim", "n_outputs"} & set(self.model_kwargs)
        if reserved:
            raise SettingError(
                "model_kwargs", f"may not set {', '.join(sorted(reserved))}; fit chooses them"
            )
        takes = model_options(self.model)
        unknown = sorted(set(self.model_kwargs) - set(takes))
        if unknown:
            raise SettingError(
                "model_kwargs",
                f"{', '.join(unknown)}: not an option of {self.model} (it takes "
                f"{', '.join(takes)})",
            )

    @property
    def run_seeds(self) -> tuple[int, ...]:
        """The seeds the cross-validation runs with: ``seeds``, or ``(seed,)``."""
        return self.seeds or (self.seed,)


@functools.cache
def setting_fields() -> dict[str, dataclasses.Field]:
    """The fields of :class:`FitSettings`, by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(FitSettings)}


def setting_default(name: str) -> Any:
    """The default of FitSettings field ``name``."""
    field = setting_fields()[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


@functools.cache
def setting_types() -> dict[str, Any]:
    """FitSettings' field types, resolved (``int | None``, ``tuple[int, ...]`` ...)."""
    return typing.get_type_hints(FitSettings)


def setting_docs() -> dict[str, str]:
    """Each field's description from FitSettings' numpydoc ``Parameters`` section."""
    doc = (FitSettings.__doc__ or "").split("Parameters\n    ----------\n", 1)[-1]
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in doc.splitlines():
        entry = re.match(r"^    (\w+(?:, \w+)*) : (.*)$", line)
        if entry:
            names = entry.group(1).split(", ")
            for name in names:
                docs[name] = entry.group(2).strip()
        elif line.startswith("        ") and names:
            for name in names:
                docs[name] += " " + line.strip()
        elif line.strip():
            names = []
    return docs


def coerce_setting(name: str, value: Any) -> Any:
    """``value`` checked against the type of FitSettings field ``name`` (ints pass as floats,
    a list as a tuple); raises :class:`SettingError` for an unknown name or a wrong type."""
    kinds = setting_types()
    if name not in kinds:
        known = ", ".join(setting_fields())
        raise SettingError(name, f"is not a setting; known settings: {known}")
    return _coerce(name, value, kinds[name])


def _coerce(name: str, value: Any, kind: Any) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SettingError(name, f"must be a list, got {value!r}")
        return tuple(_coerce(name, v, args[0]) for v in value)
    if origin is dict or kind is dict:
        if not isinstance(value, Mapping):
            raise SettingError(name, f"must be a table of name = value, got {value!r}")
        return dict(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingError(name, f"must be true or false, got {value!r}")
        return value
    if kind is int:  # numpy integers too
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise SettingError(name, f"must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise SettingError(name, f"must be a number, got {value!r}")
        return float(value)
    if kind is str and not isinstance(value, str):
        raise SettingError(name, f"must be a string, got {value!r}")
    return value


def settings_from_record(data: Mapping[str, Any] | None) -> FitSettings | dict[str, Any] | None:
    """The ``settings`` a model directory's ``config.json`` records, as :class:`FitSettings`;
    as the plain dict where they no longer make one (e.g. a model since unregistered)."""
    if data is None:
        return None
    fields = FitSettings.__dataclass_fields__
    try:
        return FitSettings(**{k: v for k, v in data.items() if k in fields})
    except (InputError, TypeError):
        return dict(data)
