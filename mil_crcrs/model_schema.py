"""What a model directory's files must hold, declared once and checked on every read.

``config.json`` is JSON anyone can edit, and weights files are whatever bytes lie there, so
:func:`check_config` holds each recorded value against :data:`CONFIG_RULES` (kind, range,
finiteness, one entry per fold model) and :func:`check_state` a weights file's tensors against
the model it must fit. A value that fails is an :class:`~mil_crcrs.errors.InputError` naming the
file and the key; nothing is scored from a model whose numbers are not finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from mil_crcrs.data.cohort import TIME_UNITS
from mil_crcrs.errors import InputError


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_number(v) for v in value)


def _mapping_or_none(value: Any) -> bool:
    return value is None or isinstance(value, dict)


#: Each key of ``config.json`` a model is read from: what it must be, and the test of it.
CONFIG_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model": (
        "a mapping with the model's 'name'",
        lambda v: isinstance(v, dict) and isinstance(v.get("name"), str),
    ),
    "weights": (
        "a list of file names",
        lambda v: isinstance(v, list) and bool(v) and all(isinstance(n, str) for n in v),
    ),
    "weights_sha256": (
        "a list of SHA-256 digests",
        lambda v: isinstance(v, list) and all(isinstance(d, str) and len(d) == 64 for d in v),
    ),
    "fold_offsets": ("a list of finite numbers", _numbers),
    "fold_scales": ("a list of finite positive numbers", lambda v: _numbers(v) and min(v) > 0),
    "ensemble_scale": ("a finite positive number", lambda v: _number(v) and v > 0),
    "ensemble_shift": ("a finite number", _number),
    "feature_dim": (
        "a positive integer",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    ),
    "encoder": ("an encoder name or null", lambda v: v is None or isinstance(v, str)),
    "feature_norm": ("true or false", lambda v: isinstance(v, bool)),
    "time_unit": (f"one of {', '.join(TIME_UNITS)}", lambda v: v in TIME_UNITS),
    "cutoff": (
        "a mapping with a finite 'value' and its 'method'",
        lambda v: (
            isinstance(v, dict) and _number(v.get("value")) and isinstance(v.get("method"), str)
        ),
    ),
    "settings": ("a mapping or null", _mapping_or_none),
    "training_cohort": ("a mapping or null", _mapping_or_none),
}
#: The keys that hold one entry per fold model.
PER_MODEL = ("weights_sha256", "fold_offsets", "fold_scales")


def check_config(path: Path, config: Mapping[str, Any]) -> None:
    """Raise :class:`InputError` naming ``path`` and the key for the first recorded value that
    breaks its rule in :data:`CONFIG_RULES` (keys that are absent are not checked here)."""
    for key, (what, test) in CONFIG_RULES.items():
        if key in config and not test(config[key]):
            raise InputError(f"{path}: {key} must be {what}, got {_shown(config[key])}")
    n_models = len(config["weights"]) if "weights" in config else None
    for key in PER_MODEL:
        if key in config and n_models is not None and len(config[key]) != n_models:
            raise InputError(
                f"{path}: {key} has {len(config[key])} entries for {n_models} weights files"
            )


def check_state(path: Path, state: Any, expected: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`InputError` unless ``state`` is a state_dict of finite tensors with the
    names and shapes of ``expected`` (the recorded model's own state_dict)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a state_dict of tensors")
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise InputError(f"{path}: the weights do not fit the model recorded in config.json")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"{path}: weights '{key}' hold NaN or inf")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
