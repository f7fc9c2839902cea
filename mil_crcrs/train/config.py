"""Fit settings from a file: TOML, YAML or JSON, or a model directory's ``config.json``.

A settings file holds :class:`~mil_crcrs.train.fit.FitSettings` fields by name, e.g. in TOML::

    model = "abmil"
    lr = 1e-3
    schedule = "onecycle"
    seeds = [0, 1, 2]
    standardize = true

    [model_kwargs]
    hidden_dim = 128
    dropout = 0.1

The ``config.json`` of a model directory (or the directory itself) is read too: its ``settings``
are the fields the run was made with, so ``crcrs fit --config model/`` repeats it. Values are
checked against the field types here and against their ranges by ``FitSettings``; an unknown
field, a wrong type or a bad value is an :class:`~mil_crcrs.errors.InputError` naming the file and
the setting. YAML needs the ``pyyaml`` package (``pip install "mil-crcrs[yaml]"``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mil_crcrs.errors import InputError, SettingError, first_line

SUFFIXES = (".toml", ".yaml", ".yml", ".json")


@functools.cache
def setting_fields() -> dict[str, dataclasses.Field]:
    """The fields of :class:`FitSettings`, by name, in declaration order."""
    from mil_crcrs.train.fit import FitSettings

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
    from mil_crcrs.train.fit import FitSettings

    return typing.get_type_hints(FitSettings)


def setting_docs() -> dict[str, str]:
    """Each field's description from FitSettings' numpydoc ``Parameters`` section."""
    from mil_crcrs.train.fit import FitSettings

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


def read_settings_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in ``path`` (TOML, YAML, JSON, a model ``config.json`` or its directory),
    checked field by field; only the fields the file sets.

    Raises
    ------
    InputError
        A missing or unreadable file, an unknown format, an unknown setting or a wrong type,
        named with the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise InputError(f"{path}: no such settings file")
    data = _parse(path)
    if data.get("format") == "mil_crcrs.model":  # a model directory's config.json
        data = data.get("settings") or {}
        if not isinstance(data, dict):
            raise InputError(f"{path}: its settings are not a table")
    settings = {}
    for name, value in data.items():
        try:
            settings[name] = coerce_setting(str(name), value)
        except SettingError as exc:
            raise InputError(f"{path}: setting {exc}") from None
    return settings


def _parse(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: settings files are {', '.join(SUFFIXES)}, not {suffix!r}")
    text = _read_text(path)
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = _load_yaml(path, text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise InputError(f"{path}: not valid {suffix[1:].upper()} ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a table of settings at the top level")
    return data


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({type(exc).__name__})") from None


def _load_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise InputError(
            f"{path}: reading YAML needs pyyaml (pip install pyyaml); or use TOML or JSON"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None
