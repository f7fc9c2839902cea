"""How the variables of a patient table enter a Cox model: the covariate encoding, stated once.

The patient table is a data frame with one row per patient, a ``time`` and an ``event`` column
(1 = event observed, 0 = censored) and the variables named by the caller: the CRCRS (``crcrs``,
continuous, log-hazard scale), its ``risk_group`` ("high"/"low") and clinical covariates.

- A covariate is **categorical** when its values are not numbers (text, booleans), or when the
  caller names it in ``categorical`` (for numeric codes such as T stage 1-4). Everything else is
  **numeric** and enters the model linearly, its hazard ratio per unit.
- The **reference level** of a categorical covariate is its most frequent level (ties go to the
  first in sorted order), so that every other level is compared against a well-populated group;
  ``risk_group`` always has ``low`` as reference. Integral numeric codes are shown without a
  decimal point ("2", not "2.0").
- A patient with a missing value of a variable in a model is left out of that model (complete
  cases, as R's ``coxph`` does by default); ``n`` and ``events`` in every table say how many were
  used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError

RISK_GROUPS = ("low", "high")
MAX_LEVELS = 20


@dataclass(frozen=True)
class Variable:
    """One model variable and its design columns.

    Attributes
    ----------
    name : the column of the patient table
    reference : the reference level of a categorical variable; None for a numeric one
    levels : the other levels of a categorical variable, each its own 0/1 design column
    """

    name: str
    reference: str | None = None
    levels: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.reference is not None

    @property
    def terms(self) -> tuple[str, ...]:
        """Names of the design columns: ``name`` or ``name=level`` per non-reference level."""
        if not self.categorical:
            return (self.name,)
        return tuple(f"{self.name}={level}" for level in self.levels)

    def encode(self, column: pd.Series, source: str) -> pd.DataFrame:
        """(n, len(terms)) float64 design columns; NaN where the value is missing."""
        if not self.categorical:
            values = pd.to_numeric(column, errors="coerce").astype(np.float64)
            return pd.DataFrame({self.name: values}, index=column.index)
        labels = as_levels(column)
        known = {self.reference, *self.levels}
        unseen = sorted(set(labels.dropna()) - known)
        if unseen:
            raise InputError(
                f"{source}: covariate '{self.name}' has level(s) {', '.join(map(repr, unseen))} "
                f"that the model was not fitted with (it knows {', '.join(sorted(known))})"
            )
        missing = labels.isna()
        out = {}
        for level, term in zip(self.levels, self.terms, strict=True):
            values = (labels == level).astype(np.float64)
            values[missing] = np.nan
            out[term] = values
        return pd.DataFrame(out, index=column.index)


@dataclass(frozen=True)
class Encoding:
    """How a list of variables becomes a Cox design matrix (see the module docstring)."""

    variables: tuple[Variable, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(t for v in self.variables for t in v.terms)

    def __getitem__(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(name)

    def subset(self, names: Iterable[str]) -> Encoding:
        return Encoding(tuple(self[n] for n in names))

    def transform(self, table: pd.DataFrame, source: str = "<table>") -> pd.DataFrame:
        """(n_patients, n_terms) float64 design matrix, NaN where a value is missing."""
        _require_columns(table, self.names, source)
        parts = [v.encode(table[v.name], source) for v in self.variables]
        return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=table.index)


def as_levels(column: pd.Series) -> pd.Series:
    """The values of a categorical column as strings (``2.0`` -> ``"2"``), NaN kept as NaN."""

    def label(value: object) -> object:
        if pd.isna(value):
            return np.nan
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return str(int(value))
        return str(value).strip()

    return column.map(label).astype(object)


def is_categorical(column: pd.Series) -> bool:
    """True when the column's values are not all numbers (after dropping missing values)."""
    values = column.dropna()
    if pd.api.types.is_bool_dtype(values):
        return True
    return bool(pd.to_numeric(values, errors="coerce").isna().any())


def make_encoding(
    table: pd.DataFrame,
    names: Sequence[str],
    categorical: Iterable[str] = (),
    source: str = "<table>",
) -> Encoding:
    """Decide how each variable enters a Cox model, from the (training) patient table.

    Parameters
    ----------
    table : patient table holding the columns ``names``
    names : variables in model order
    categorical : names to treat as categorical even though their values are numbers
    source : the table's origin, for messages

    Raises
    ------
    InputError
        when a column is missing, constant, entirely empty, or categorical with more than
        20 levels (most likely an id or a numeric column with stray text).
    """
    _require_columns(table, names, source)
    forced = set(categorical)
    variables = []
    for name in names:
        column = table[name]
        present = column.dropna()
        if present.empty:
            raise InputError(f"{source}: covariate '{name}' has no values")
        if name == "risk_group":
            variables.append(Variable(name, "low", ("high",)))
            levels = set(as_levels(present))
            if levels != set(RISK_GROUPS):
                raise InputError(
                    f"{source}: column 'risk_group' must hold both 'high' and 'low', "
                    f"got {', '.join(sorted(levels))}"
                )
            continue
        if name in forced or is_categorical(column):
            labels = as_levels(present)
            counts = labels.value_counts()
            if len(counts) > MAX_LEVELS:
                raise InputError(
                    f"{source}: covariate '{name}' has {len(counts)} distinct non-numeric values; "
                    f"a categorical covariate may have at most {MAX_LEVELS} levels"
                )
            if len(counts) < 2:
                raise InputError(
                    f"{source}: covariate '{name}' is constant (every patient has "
                    f"{labels.iloc[0]!r}); a constant cannot enter a Cox model"
                )
            # Most frequent level as reference; ties broken by sorted order.
            ordered = sorted(counts.index, key=lambda lv: (-counts[lv], lv))
            variables.append(Variable(name, ordered[0], tuple(sorted(ordered[1:]))))
        else:
            values = pd.to_numeric(present)
            if values.nunique() < 2:
                raise InputError(
                    f"{source}: covariate '{name}' is constant (every patient has "
                    f"{values.iloc[0]}); a constant cannot enter a Cox model"
                )
            variables.append(Variable(name))
    return Encoding(tuple(variables))


def _require_columns(table: pd.DataFrame, names: Iterable[str], source: str) -> None:
    missing = [n for n in names if n not in table.columns]
    if missing:
        have = [c for c in table.columns if c not in ("time", "event")]
        raise InputError(
            f"{source}: covariate(s) {', '.join(map(repr, missing))} not found "
            f"(the table has {', '.join(map(str, have))})"
        )
