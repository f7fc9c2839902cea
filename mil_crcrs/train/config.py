"""Fit settings from a file: TOML, YAML or JSON, or a model directory's ``config.json``.

A settings file holds :class:`~mil_crcrs.train.settings.FitSettings` fields by name, e.g. in TOML::

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
checked against the field types (:func:`~mil_crcrs.train.settings.coerce_setting`) and their
ranges (``FitSettings``); an unknown
field, a wrong type or a bad value is an :class:`~mil_crcrs.errors.InputError` naming the file and
the setting. YAML needs the ``pyyaml`` package (``pip install "mil-crcrs[yaml]"``).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from mil_crcrs.errors import InputError, SettingError, first_line
from mil_crcrs.train.settings import coerce_setting

SUFFIXES = (".toml", ".yaml", ".yml", ".json")


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
