"""The inputs of ``associate``: the scores and the omics files, keyed by scored patient.

- Scores: a ``predictions.csv`` of ``crcrs predict`` or a model directory (its
  ``oof_predictions.csv``: the training cohort's out-of-fold CRCRS). Both carry ``risk_group``
  from the model's own cutoff, fixed on the training cohort; it is used as it is.
- Expression matrices and per-patient tables are re-keyed from samples to scored patients by
  :func:`~mil_crcrs.omics.barcodes.map_samples` (tumour samples only).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from mil_crcrs.errors import InputError
from mil_crcrs.omics.barcodes import map_samples, sample_table_map
from mil_crcrs.omics.expression import unique_genes
from mil_crcrs.omics.readers import read_gene_matrix, read_patient_table, read_text_table
from mil_crcrs.stats.report.inputs import read_predictions

log = logging.getLogger(__name__)

OOF_NAME = "oof_predictions.csv"  # a model directory's out-of-fold predictions


def read_scores(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """The CRCRS and risk group per patient, and one line saying where they came from.

    Returns
    -------
    (scores, note): indexed by patient id, ``crcrs`` (float) and ``risk_group`` (high/low)
    """
    path = Path(path)
    cutoff = ""
    if path.is_dir():
        config = path / "config.json"
        if not (path / OOF_NAME).is_file():
            raise InputError(f"{path}: a model directory holds {OOF_NAME}; it is not there")
        if config.is_file():
            value = json.loads(config.read_text()).get("cutoff", {})
            cutoff = f", cutoff {value.get('value', float('nan')):.4g} ({value.get('method')})"
        path = path / OOF_NAME
    elif not path.is_file():
        raise InputError(f"{path}: no such file (scores: predictions.csv or a model directory)")
    table = read_predictions(path)
    scores = table[["crcrs", "risk_group"]]
    n_high = int((scores["risk_group"] == "high").sum())
    note = (
        f"scores: {path}: {len(scores)} patients, {n_high} high and {len(scores) - n_high} low "
        f"by the model's training cutoff{cutoff}"
    )
    if n_high in (0, len(scores)):
        raise InputError(f"{path}: every patient is in one risk group; nothing to compare")
    return scores, note


def sample_map_of(samples_file: str | os.PathLike | None) -> dict[str, str]:
    """``SAMPLE_ID -> PATIENT_ID`` of a cBioPortal ``data_clinical_sample.txt`` (or nothing)."""
    if samples_file is None:
        return {}
    table = read_text_table(samples_file)
    return sample_table_map(table.frame, table.source)


def expression_by_patient(
    path: str | os.PathLike,
    scored: pd.Index,
    sample_to_patient: Mapping[str, str],
    what: str = "expression",
) -> tuple[pd.DataFrame, list[str]]:
    """The (n_genes, n_patients) matrix with one column per scored patient, and log notes.

    The matrix may be genes x samples (cBioPortal, most tools) or samples x genes: the axis
    whose ids match scored patients is taken as the samples. ``what`` names it in the notes
    (a discrete copy-number matrix is read the same way).
    """
    matrix, source = read_gene_matrix(path)
    ids = pd.Index(matrix.columns.astype(str))
    if _n_matching(ids, scored, sample_to_patient) == 0:
        rows = pd.Index(matrix.index.astype(str))
        if _n_matching(rows, scored, sample_to_patient) > 0:
            matrix = matrix.T
            ids = rows
    mapping = map_samples(ids, scored, source, sample_to_patient)
    matrix = matrix.loc[:, [c in mapping.patient_of for c in ids]]
    matrix.columns = [mapping.patient_of[c] for c in ids if c in mapping.patient_of]
    matrix.index = matrix.index.astype(str)
    matrix, n_dup = unique_genes(matrix)
    notes = [f"{what}: {source}: {mapping.describe()}"]
    if n_dup:
        notes.append(f"{what}: {n_dup} rows repeating a gene symbol dropped (highest mean kept)")
    return matrix, notes


def _n_matching(ids: pd.Index, scored: pd.Index, sample_to_patient: Mapping[str, str]) -> int:
    from mil_crcrs.omics.barcodes import tcga_patient

    keys = set(scored)
    return sum(
        1 for i in ids if i in keys or sample_to_patient.get(i) in keys or tcga_patient(i) in keys
    )


def table_by_patient(
    path: str | os.PathLike, scored: pd.Index, sample_to_patient: Mapping[str, str]
) -> tuple[pd.DataFrame, str]:
    """A per-patient (or per-sample) table re-keyed by scored patient, and a log note."""
    frame, source = read_patient_table(path)
    if frame.index.duplicated().any():
        dup = frame.index[frame.index.duplicated()][0]
        raise InputError(f"{source}: id '{dup}' has more than one row")
    mapping = map_samples(frame.index, scored, source, sample_to_patient)
    kept = frame.loc[[i in mapping.patient_of for i in frame.index]]
    kept.index = pd.Index([mapping.patient_of[i] for i in kept.index], name="patient_id")
    return kept, f"table: {source}: {mapping.describe()}"
