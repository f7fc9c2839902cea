"""What the values of an event column mean: 0/1, status words, or cBioPortal's codes.

Peers and portals write the event column in their own words: STAMP ``dead``/``alive``,
``event``/``censored``, ``yes``/``no``; cBioPortal ``1:DECEASED``/``0:LIVING``. :func:`read_status`
turns each into 1 (event observed) and 0 (censored), and says how in one logged line.
"""

from __future__ import annotations

import logging
import re

import pandas as pd

log = logging.getLogger(__name__)

#: Column names that say 1 = censored (CLAM, PORPOISE): the opposite of an event column.
CENSORING_NAME = re.compile(r"censor|^cens$|^is_cens", re.IGNORECASE)


#: Status words as STAMP reads them (``stamp.modeling.data._parse_survival_status``), by case.
EVENT_WORDS = {"event": 1, "dead": 1, "deceased": 1, "yes": 1, "y": 1, "true": 1}
CENSORED_WORDS = {"alive": 0, "censored": 0, "no": 0, "false": 0}


def read_status(table: pd.DataFrame, column: str, source: str) -> pd.DataFrame:
    """``table`` with a status column of words (STAMP's ``dead``/``alive``, ``event``/
    ``censored``, ``yes``/``no``) or of cBioPortal's codes (``1:DECEASED``/``0:LIVING``,
    :func:`decode_status`) read as 1 (event) and 0 (censored), said in one logged line; the
    table unchanged where the column holds neither."""
    coded = decode_status(table[column], column, source)
    if coded is not table[column]:
        return table.assign(**{column: coded})
    values = table[column]
    if values.dtype.kind != "O" or looks_like_censoring(column):  # "dead" is no censoring
        return table
    words = values.map(lambda v: v.strip().lower() if isinstance(v, str) else v)
    known = {**EVENT_WORDS, **CENSORED_WORDS}
    is_word = words.map(lambda v: isinstance(v, str) and v in known)
    if not is_word.any():
        return table
    mapped = words.where(~is_word, words.map(known))
    seen = sorted({str(v).strip() for v in values[is_word]}, key=lambda w: (-known[w.lower()], w))
    log.info(
        "%s: status column '%s' read as words: %s (1 = event, 0 = censored)",
        source,
        column,
        ", ".join(f"{w} = {known[w.lower()]}" for w in seen),
    )
    return table.assign(**{column: mapped})


def decode_status(column: pd.Series, name: str, source: str) -> pd.Series:
    """cBioPortal's status coding, ``1:DECEASED`` / ``0:LIVING`` (any ``N:LABEL``), as N.

    Returns the column unchanged unless every non-blank value is ``0:...`` or ``1:...``.
    """
    if pd.api.types.is_numeric_dtype(column):
        return column
    text = column.dropna().astype(str).str.strip()
    codes = text.str.extract(r"^([01])\s*:\s*\S", expand=False)
    if text.empty or codes.isna().any():
        return column
    labels = sorted(set(text))
    log.info("%s: '%s' read as cBioPortal status codes (%s)", source, name, ", ".join(labels))
    return pd.to_numeric(column.astype(str).str.strip().str[0].where(column.notna()))


def looks_like_censoring(name: object) -> bool:
    """True if a column name says it holds a censoring indicator (``censorship``, ...)."""
    return isinstance(name, str) and bool(CENSORING_NAME.search(name))
