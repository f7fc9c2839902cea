"""Omics files as researchers download them: cBioPortal study folders, MAFs, matrices, GMTs.

Formats, as cBioPortal's file-format documentation (docs.cbioportal.org/file-formats) gives them:

- clinical files (``data_clinical_patient.txt``, ``data_clinical_sample.txt``): tab-separated,
  four header lines starting with ``#`` (display names, descriptions, data types, priorities),
  then the column names (``PATIENT_ID``, ``SAMPLE_ID``, ``OS_STATUS`` = ``1:DECEASED`` /
  ``0:LIVING``, ``OS_MONTHS`` ...);
- ``data_mutations.txt``: a MAF, ``Hugo_Symbol``, ``Tumor_Sample_Barcode`` and
  ``Variant_Classification`` required; GDC MAFs start with ``#version`` lines;
- expression (``data_mrna_seq_v2_rsem.txt``) and discrete CNA (``data_cna.txt``): ``Hugo_Symbol``
  and/or ``Entrez_Gene_Id``, then one column per sample;
- gene sets: GMT, one set per line: name, description, genes (tab-separated).

Plain tables work too: any CSV/TSV whose first column (or ``PATIENT_ID``/``patient_id``) is the
id. Leading ``#`` lines are skipped everywhere and counted, so line numbers in errors are the
file's own. Every problem raises :class:`~mil_crcrs.errors.InputError` naming the file, line or
column.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mil_crcrs.errors import InputError, first_line

MAF_COLUMNS = ("Hugo_Symbol", "Tumor_Sample_Barcode", "Variant_Classification")
GENE_COLUMNS = ("Hugo_Symbol", "Entrez_Gene_Id")
ID_COLUMNS = ("PATIENT_ID", "patient_id", "SAMPLE_ID", "sample_id", "Mixture", "case_id")
#: The files of a cBioPortal study folder that ``associate`` reads, by role.
CBIOPORTAL_FILES = {
    "patients": ("data_clinical_patient.txt",),
    "samples": ("data_clinical_sample.txt",),
    "mutations": ("data_mutations.txt", "data_mutations_extended.txt"),
    "expression": (
        "data_mrna_seq_v2_rsem.txt",
        "data_RNA_Seq_v2_expression_median.txt",
        "data_mrna_seq_tpm.txt",
        "data_mrna_seq_rpkm.txt",
    ),
    "cna": ("data_cna.txt", "data_CNA.txt"),
}


@dataclass(frozen=True)
class Table:
    """A table read from a file, with the number of ``#`` lines above its header.

    ``line(i)`` is the file line of data row ``i`` (header = line ``skipped + 1``).
    """

    frame: pd.DataFrame
    source: str
    skipped: int = 0

    def line(self, row: int) -> str:
        return f"line {row + self.skipped + 2}"


def read_text_table(path: str | os.PathLike, numeric: bool = False) -> Table:
    """A tab- or comma-separated table, its leading ``#`` lines skipped.

    Every cell is text, unless ``numeric``: then columns are parsed by pandas (numbers, with
    blank/``NA``/``NaN`` as NaN) except the gene and id columns, which stay text.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    lines = text.split("\n")
    skipped = 0
    while skipped < len(lines) and lines[skipped].startswith("#"):
        skipped += 1
    header = lines[skipped] if skipped < len(lines) else ""
    if not header.strip():
        raise InputError(f"{path}: no header line after {skipped} comment line(s)")
    sep = "\t" if header.count("\t") >= header.count(",") else ","
    names = [c.strip() for c in header.split(sep)]
    text_cols = [c for c in names if c in GENE_COLUMNS or c in ID_COLUMNS] or names[:1]
    kind = {"dtype": {c: str for c in text_cols}} if numeric else {"dtype": str}
    try:
        frame = pd.read_csv(
            io.StringIO("\n".join(lines[skipped:])), sep=sep, keep_default_na=numeric, **kind
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable table ({first_line(exc)})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise InputError(f"{path}: the table has no rows")
    return Table(frame, str(path), skipped)


def read_maf(path: str | os.PathLike | Table) -> Table:
    """A MAF (cBioPortal ``data_mutations.txt`` or a GDC ``.maf``, or its table already read)
    with its required columns."""
    table = path if isinstance(path, Table) else read_text_table(path)
    missing = [c for c in MAF_COLUMNS if c not in table.frame.columns]
    if missing:
        raise InputError(
            f"{table.source}: missing MAF column(s) {', '.join(map(repr, missing))} (a MAF needs "
            f"{', '.join(MAF_COLUMNS)}; the file has {', '.join(table.frame.columns[:8])}, ...)"
        )
    return table


def is_maf(table: Table) -> bool:
    """True when the table has the MAF columns (else it is a patient x gene 0/1 table)."""
    return all(c in table.frame.columns for c in MAF_COLUMNS)


def read_gene_matrix(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """A genes x samples matrix (cBioPortal layout: ``Hugo_Symbol`` and/or ``Entrez_Gene_Id``
    first) or an id column then numbers (either orientation; see :func:`orient`).

    Returns the numeric frame (rows = the file's rows, indexed by gene or id) and its source.
    A cell that is not a number, or a row holding NaN, is an error naming the line and row.
    """
    table = read_text_table(path, numeric=True)
    frame = table.frame
    genes = [c for c in GENE_COLUMNS if c in frame.columns]
    if genes:
        symbol = frame[genes[0]].astype(str).str.strip()
        if len(genes) == 2:  # a symbol where there is one, else the Entrez id
            blank = symbol.isin(["", "NA", "nan"])
            symbol = symbol.where(~blank, frame["Entrez_Gene_Id"].astype(str))
        index, values = symbol, frame.drop(columns=genes)
    else:
        index, values = frame.iloc[:, 0].astype(str).str.strip(), frame.iloc[:, 1:]
    numbers = _numbers(values, table, index)
    numbers.index = pd.Index(index.to_numpy(), name="id")
    return numbers, table.source


def _numbers(values: pd.DataFrame, table: Table, index: pd.Series) -> pd.DataFrame:
    if values.shape[1] == 0:
        raise InputError(f"{table.source}: no sample columns after the id column(s)")
    for col in values.columns:
        if not pd.api.types.is_numeric_dtype(values[col]):  # a cell pandas could not parse
            parsed = pd.to_numeric(values[col], errors="coerce")
            row = int(np.flatnonzero(parsed.isna() & values[col].notna())[0])
            raise InputError(
                f"{table.source}, {table.line(row)}, column '{col}': not a number "
                f"({values[col].iloc[row]!r})"
            )
    numbers = values
    holes = numbers.isna().any(axis=1).to_numpy()
    if holes.any():
        row = int(np.flatnonzero(holes)[0])
        raise InputError(
            f"{table.source}, {table.line(row)}: row '{index.iloc[row]}' holds NaN "
            f"({int(holes.sum())} such rows); drop or impute them first"
        )
    return numbers.astype(np.float64)


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Gene sets from a GMT file: ``name <tab> description <tab> gene <tab> gene ...``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    sets: dict[str, list[str]] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines()):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) < 3:
            raise InputError(
                f"{path}, line {i + 1}: a GMT line is name, description, genes (tab-separated)"
            )
        if fields[0] in sets:
            raise InputError(f"{path}, line {i + 1}: gene set '{fields[0]}' is named twice")
        sets[fields[0]] = [g for g in fields[2:] if g]
    if not sets:
        raise InputError(f"{path}: no gene set in the file")
    return sets


def read_patient_table(path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """Any per-patient (or per-sample) table: the id column (``PATIENT_ID``, ``patient_id``,
    ``SAMPLE_ID``, CIBERSORTx's ``Mixture`` ..., else the first column) becomes the index;
    values stay text (see :func:`numeric_or_text`)."""
    table = read_text_table(path)
    frame = table.frame
    id_col = next((c for c in ID_COLUMNS if c in frame.columns), frame.columns[0])
    out = frame.set_index(frame[id_col].astype(str).str.strip()).drop(columns=[id_col])
    if "PATIENT_ID" in out.columns and id_col == "SAMPLE_ID":
        out = out.drop(columns=["PATIENT_ID"])
    out.index.name = "id"
    if out.shape[1] == 0:
        raise InputError(f"{table.source}: no column besides the id column '{id_col}'")
    return out, table.source


def numeric_or_text(column: pd.Series) -> pd.Series:
    """The column as numbers when every non-blank cell is one, else as text (blank = NaN)."""
    text = (
        column.astype(str)
        .str.strip()
        .replace({"": np.nan, "NA": np.nan, "[Not Available]": np.nan})
    )
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().sum() == text.notna().sum():
        return numbers
    return text


@dataclass(frozen=True)
class CBioPortalStudy:
    """The files of a cBioPortal study folder that ``associate`` uses (None = absent)."""

    folder: Path
    patients: Path | None
    samples: Path | None
    mutations: Path | None
    expression: Path | None
    cna: Path | None


def find_cbioportal(folder: str | os.PathLike) -> CBioPortalStudy:
    """Locate the clinical, sample, mutation, expression and CNA files of a study folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (a cBioPortal study folder)")
    found = {
        role: next((folder / n for n in names if (folder / n).is_file()), None)
        for role, names in CBIOPORTAL_FILES.items()
    }
    if all(found[k] is None for k in ("mutations", "expression", "cna")):
        raise InputError(
            f"{folder}: neither {CBIOPORTAL_FILES['mutations'][0]} nor "
            f"{CBIOPORTAL_FILES['expression'][0]}; is this a cBioPortal study folder?"
        )
    return CBioPortalStudy(folder, **found)
