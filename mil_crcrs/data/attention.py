"""The per-slide attention files of ``CRCRSModel.predict(attention_dir=...)``.

One HDF5 file per slide (:func:`mil_crcrs.data.store.write_attention_file`): the tiles' level-0
``coords``, their ``attention`` (normalised over all of the patient's tiles) and
``contribution``, and the patient's CRCRS and risk group as attributes. The folder may not be,
hold or lie inside the feature folders it scores (:func:`mil_crcrs.atomic.refuse_overwrite`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mil_crcrs._version import __version__
from mil_crcrs.atomic import refuse_overwrite
from mil_crcrs.data.bags import PatientBag
from mil_crcrs.data.cohort import DataWarning
from mil_crcrs.data.store import FeatureStore, write_attention_file


def write_attention_files(
    folder: Path,
    store: FeatureStore,
    slide_ids: Sequence[str],
    bags: Sequence[PatientBag],
    crcrs: np.ndarray,
    groups: Sequence[str],
    attention: Sequence[np.ndarray],
    contribution: Sequence[np.ndarray],
    encoder: str | None,
    reference: float = float("nan"),
) -> None:
    """The attention files of ``predict(attention_dir=folder)``: one per slide of ``slide_ids``
    (those of ``bags``), each written atomically.

    Parameters
    ----------
    store : the feature files (to warn once about slides without tile coordinates)
    bags : the patients; ``crcrs`` (n,), ``groups`` (n,) and the per-bag arrays ``attention``
        and ``contribution`` (n_tiles,) are aligned with them
    encoder : the model's encoder, recorded in every file
    reference : the CRCRS the contributions are measured against, recorded in every file
    """
    roots = {f"features #{i + 1}": root for i, root in enumerate(store.roots)}
    refuse_overwrite({"attention_dir": folder}, roots, folders={"attention_dir"})
    _warn_unknown_coords(store, slide_ids)
    for i in range(len(bags)):
        parts = attention[i], contribution[i]
        _write_patient_attention(folder, bags[i], (crcrs[i], reference), groups[i], *parts, encoder)


def _warn_unknown_coords(store: FeatureStore, slide_ids: Sequence[str]) -> None:
    """One warning for the slides whose attention files cannot say where the tiles are."""
    unknown = [s for s in slide_ids if not store.info(s).has_coords]
    if unknown:
        warnings.warn(
            f"{len(unknown)} of {len(slide_ids)} slide(s) have no level-0 tile coordinates "
            f"(e.g. {unknown[0]}: {store.info(unknown[0]).coords_note}); their attention files "
            "hold coords -1 and no heatmap can be drawn from them",
            DataWarning,
            stacklevel=4,
        )


def _write_patient_attention(
    folder: Path,
    bag: PatientBag,
    crcrs: tuple[float, float],
    group: str,
    attention: np.ndarray,
    contribution: np.ndarray,
    encoder: str | None,
) -> None:
    """One HDF5 file per slide of ``bag``, each written atomically; ``crcrs`` is the patient's
    CRCRS and the reference its contributions are measured against."""
    for k, slide_id in enumerate(bag.slide_ids):
        rows = bag.tile_slide == k
        note = bag.coords_notes[k] if k < len(bag.coords_notes) else ""
        attrs = {
            "coords_known": not note,
            "slide_id": slide_id,
            "patient_id": bag.patient_id,
            "crcrs": float(crcrs[0]),
            "contribution_reference": float(crcrs[1]),
            "risk_group": str(group),
            "encoder": encoder or "",
            "package_version": __version__,
            "note": "attention is normalised over all of the patient's tiles "
            "(all slides); contribution is each tile's share of crcrs - contribution_reference "
            "(the training cohort's mean CRCRS): positive raises the risk above it",
        }
        if note:
            attrs["coords_note"] = f"coords are -1: {note}"
        write_attention_file(
            folder / f"{slide_id}.h5", bag.coords[rows], attention[rows], contribution[rows], attrs
        )
