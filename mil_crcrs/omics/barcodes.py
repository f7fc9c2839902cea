"""Samples to patients: TCGA barcodes, cBioPortal sample tables, and which samples are used.

A TCGA barcode ``TCGA-AA-3514-01A-01D-1234-10`` names the patient in its first three fields
(``TCGA-AA-3514``) and the sample type in the first two digits of the fourth: ``01``-``09`` are
tumour samples (primary, recurrent, metastatic ...), ``10``-``19`` normal tissue or blood, ``20``
and above controls. Only tumour samples are associated with a patient's CRCRS; the others are
left out and counted in the run log; so are samples whose ``SAMPLE_TYPE`` in a cBioPortal sample
table says normal.

:func:`map_samples` maps each column (or row) of an omics file to a scored patient: through a
cBioPortal ``data_clinical_sample.txt`` mapping when one is given, else a sample named as the
patient is that patient, else a TCGA barcode is cut to its patient. A patient with two tumour
samples in one file is an error (which to keep is the user's choice, not ours).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from mil_crcrs.errors import InputError

#: ``TCGA-XX-XXXX`` then optionally ``-NN`` (sample type) and the rest of the barcode.
TCGA_BARCODE = re.compile(r"^(TCGA-[A-Za-z0-9]{2}-[A-Za-z0-9]{4})(?:-(\d{2})[A-Za-z]?(?:-.*)?)?$")
#: What :func:`sample_table_map` maps a sample to when its ``SAMPLE_TYPE`` says normal tissue.
NORMAL_SAMPLE = "\x00normal"
TUMOUR_TYPES = range(1, 10)
NORMAL_TYPES = range(10, 20)


def tcga_patient(barcode: str) -> str | None:
    """``TCGA-AA-3514-01A-01D-1234-10`` -> ``TCGA-AA-3514``; None for a non-TCGA id."""
    match = TCGA_BARCODE.match(str(barcode).strip())
    return match.group(1) if match else None


def tcga_sample_type(barcode: str) -> int | None:
    """The sample-type code of a TCGA sample barcode (``01`` -> 1, ``11`` -> 11); None when the
    id is not a TCGA barcode or names the patient only."""
    match = TCGA_BARCODE.match(str(barcode).strip())
    return int(match.group(2)) if match and match.group(2) else None


@dataclass(frozen=True)
class SampleMap:
    """Which samples of one file were used, for which patient, and what was left out.

    Attributes
    ----------
    patient_of : sample id -> patient id, for the samples used (tumour samples of scored
        patients), one sample per patient
    n_normal : normal samples (TCGA types 10-19) and controls (20+) left out
    unmatched : samples whose patient has no score
    """

    patient_of: dict[str, str]
    n_normal: int
    unmatched: tuple[str, ...]

    def describe(self) -> str:
        """One line for the run log."""
        return (
            f"{len(self.patient_of)} tumour samples of scored patients used; {self.n_normal} "
            f"normal/control samples (TCGA types 10-99, or SAMPLE_TYPE normal) left out; "
            f"{len(self.unmatched)} samples "
            "of patients without a score left out"
        )


def map_samples(
    samples: Iterable[str],
    scored: Iterable[str],
    source: str,
    sample_to_patient: Mapping[str, str] | None = None,
) -> SampleMap:
    """Map sample ids to scored patients (see the module docstring).

    Parameters
    ----------
    samples : the file's sample ids
    scored : patient ids that have a CRCRS
    source : the file, for messages
    sample_to_patient : a cBioPortal sample table's ``SAMPLE_ID -> PATIENT_ID``, if any

    Raises
    ------
    InputError
        No sample matches a scored patient, or a patient has two tumour samples.
    """
    scored = set(map(str, scored))
    known = dict(sample_to_patient or {})
    patient_of: dict[str, str] = {}
    n_normal, unmatched = 0, []
    for sample in map(str, samples):
        kind = tcga_sample_type(sample)
        if (kind is not None and kind not in TUMOUR_TYPES) or known.get(sample) == NORMAL_SAMPLE:
            n_normal += 1
            continue
        patient = known.get(sample) or (sample if sample in scored else tcga_patient(sample))
        if patient is None or patient not in scored:
            unmatched.append(sample)
            continue
        patient_of[sample] = patient
    if not patient_of:
        example = unmatched[0] if unmatched else "(only normal samples)"
        raise InputError(
            f"{source}: no sample matches a scored patient (e.g. sample '{example}' vs patient "
            f"'{next(iter(sorted(scored)), '')}'); are the ids TCGA barcodes, patient ids, or "
            "named in data_clinical_sample.txt?"
        )
    _refuse_duplicates(patient_of, source)
    return SampleMap(patient_of, n_normal, tuple(unmatched))


def _refuse_duplicates(patient_of: Mapping[str, str], source: str) -> None:
    seen: dict[str, str] = {}
    for sample, patient in patient_of.items():
        if patient in seen:
            raise InputError(
                f"{source}: patient '{patient}' has two tumour samples, '{seen[patient]}' and "
                f"'{sample}'; keep one sample per patient"
            )
        seen[patient] = sample


def sample_table_map(table: pd.DataFrame, source: str) -> dict[str, str]:
    """``SAMPLE_ID -> PATIENT_ID`` of a cBioPortal ``data_clinical_sample.txt``; a sample whose
    ``SAMPLE_TYPE`` names normal tissue maps to :data:`NORMAL_SAMPLE`."""
    missing = [c for c in ("SAMPLE_ID", "PATIENT_ID") if c not in table.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(map(repr, missing))}")
    sample = table["SAMPLE_ID"].astype(str)
    patient = table["PATIENT_ID"].astype(str)
    if "SAMPLE_TYPE" in table.columns:
        normal = table["SAMPLE_TYPE"].astype(str).str.contains("normal", case=False)
        patient = patient.where(~normal, NORMAL_SAMPLE)
    return dict(zip(sample, patient, strict=True))


def collapse_barcodes(barcodes: pd.Series) -> pd.Series:
    """A MAF's ``Tumor_Sample_Barcode`` cut to the sample (``TCGA-AA-3514-01A-01D-...`` ->
    ``TCGA-AA-3514-01``), so that several aliquots of one sample count as one sample; other ids
    are kept as they are."""
    text = barcodes.astype(str).str.strip()
    cut = text.str.extract(r"^(TCGA-[A-Za-z0-9]{2}-[A-Za-z0-9]{4}-\d{2})", expand=False)
    return cut.fillna(text)
