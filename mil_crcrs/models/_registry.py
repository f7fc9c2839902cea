"""The aggregator registry: ``@register_model("name")`` on a class, ``create_model(name, ...)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from mil_crcrs.errors import InputError
from mil_crcrs.models._base import MILModel

_MODELS: dict[str, type[MILModel]] = {}

M = TypeVar("M", bound=type[MILModel])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make a :class:`MILModel` subclass available as ``create_model(name)``."""

    def decorate(cls: M) -> M:
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        cls.model_name = name
        _MODELS[name] = cls
        return cls

    return decorate


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


def model_options(name: str) -> dict[str, Any]:
    """The hyperparameters model ``name`` takes besides ``in_dim`` and ``n_outputs``, with their
    defaults (what ``FitSettings.model_kwargs`` may set)."""
    if name not in _MODELS:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    parameters = inspect.signature(_MODELS[name]).parameters
    return {
        key: p.default
        for key, p in parameters.items()
        if key not in ("in_dim", "n_outputs") and p.kind is p.POSITIONAL_OR_KEYWORD
    }


def create_model(name: str = "abmil", **kwargs: Any) -> MILModel:
    """Build a registered model.

    Parameters
    ----------
    name : a name from :func:`list_models`
    **kwargs : the model's constructor arguments (``in_dim``, ``n_outputs``, ``dropout`` and its
        own hyperparameters); ``create_model(**model.config)`` rebuilds ``model``

    Raises
    ------
    InputError
        for an unknown name or an argument the model does not take
    """
    if name not in _MODELS:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    cls = _MODELS[name]
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise InputError(f"model {name!r}: {exc}") from None
    return cls(**kwargs)
