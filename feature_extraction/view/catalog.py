"""What the viewer shows, without reading a pixel: patients, their slides, their tiles' scores.

Two sources of scores, both giving the project's own numbers (nothing is recomputed here):

- :class:`ModelScores`: a trained model and the feature files. The patient list comes from
  :meth:`~mil_crcrs.ensemble.CRCRSModel.predict` (CRCRS, risk group, outcome) and each patient's
  tile scores from :func:`~mil_crcrs.explain.scores.tile_scores` (both through the ensemble's one
  ``risk()``), computed when the patient is first shown and then kept;
- :class:`AttentionFileScores`: the per-slide attention files ``crcrs predict --attention DIR``
  writes (``coords``, ``attention``, ``contribution``, and the patient's CRCRS and risk group in
  the file attributes), with the outcome from a clinical table when one is given.

Both hand out :class:`~mil_crcrs.explain.scores.TileScores` and :class:`PatientRow` objects.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mil_crcrs.data._h5 import ATTENTION_FORMAT, open_h5
from mil_crcrs.data.store import BagInfo, FeatureStore
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.explain.scores import TileScores, tile_scores
from mil_crcrs.explain.tiling import tile_edge_level0

if TYPE_CHECKING:
    from mil_crcrs.data.cohort import Cohort
    from mil_crcrs.data.inputs import Inputs
    from mil_crcrs.data.tables import Columns
    from mil_crcrs.ensemble import CRCRSModel


@dataclass(frozen=True)
class PatientRow:
    """One line of the viewer's patient list.

    Attributes
    ----------
    patient_id : str
    slides : the patient's slide ids
    crcrs : the patient's CRCRS
    risk_group : "high" or "low" (the model's fixed cutoff)
    time : follow-up time in ``time_unit`` (None where no outcome is known)
    event : 1 = event observed, 0 = censored (None where unknown)
    """

    patient_id: str
    slides: tuple[str, ...]
    crcrs: float
    risk_group: str
    time: float | None = None
    event: int | None = None


class ModelScores:
    """A trained model's scores of the patients in ``inputs``.

    Parameters
    ----------
    model : the trained ensemble (on the device it scores on)
    inputs : feature files matched with the cohort
    """

    def __init__(self, model: CRCRSModel, inputs: Inputs) -> None:
        self.model = model
        self.inputs = inputs
        self.time_unit = inputs.cohort.time_unit if inputs.cohort.has_outcome else None
        self._index = {pid: i for i, pid in enumerate(inputs.cohort.patient_ids)}
        self._scores: dict[str, TileScores] = {}

    def patients(self) -> list[PatientRow]:
        """Every patient's CRCRS, risk group and outcome (:meth:`CRCRSModel.predict`)."""
        table = self.model.predict(self.inputs.store, self.inputs.cohort)
        cohort = self.inputs.cohort
        rows = []
        for i, pid in enumerate(cohort.patient_ids):
            rows.append(
                PatientRow(
                    patient_id=str(pid),
                    slides=tuple(cohort.slides[pid]),
                    crcrs=float(table["crcrs"].iloc[i]),
                    risk_group=str(table["risk_group"].iloc[i]),
                    time=_number(table["time"].iloc[i]) if "time" in table else None,
                    event=_integer(table["event"].iloc[i]) if "event" in table else None,
                )
            )
        return rows

    def scores(self, patient_id: str) -> TileScores:
        """The patient's tile scores (:func:`~mil_crcrs.explain.scores.tile_scores`), kept."""
        if patient_id not in self._scores:
            bag = self.inputs.bags[self._index[patient_id]]
            self._scores[patient_id] = tile_scores(self.model, bag)
        return self._scores[patient_id]

    def tile_edge(self, slide_id: str, coords: np.ndarray) -> float:
        """A slide's tile edge in level-0 pixels (recorded in its feature file, else the grid
        step of its coords)."""
        return tile_edge_level0(self.inputs.store.info(slide_id), coords)

    def level0_size(self, slide_id: str) -> tuple[int, int] | None:
        """The slide size the feature file records (None where it records none)."""
        return _recorded_size(self.inputs.store, slide_id)

    def reference(self) -> float | None:
        """What the tile contributions are measured against (the training cohort's mean CRCRS:
        reference + sum of a patient's contributions = its CRCRS)."""
        return float(self.model.contribution_reference)


class AttentionFileScores:
    """The scores in the attention files of ``crcrs predict --attention DIR``.

    Parameters
    ----------
    folder : the attention folder (one ``<slide_id>.h5`` per slide)
    cohort : a cohort table for the outcome, or None
    store : the feature files, for the tile size they record, or None (the grid step of the
        coords then)
    """

    def __init__(
        self, folder: str | os.PathLike, cohort: Cohort | None, store: FeatureStore | None
    ) -> None:
        self.folder = Path(folder)
        self.cohort = cohort
        self.store = store
        self.time_unit = cohort.time_unit if cohort is not None and cohort.has_outcome else None
        self._files: dict[str, Path] = {}
        self._slides: dict[str, list[str]] = {}
        self._header: dict[str, tuple[float, str]] = {}
        self._reference: float | None = None
        self._read_headers()
        self._scores: dict[str, TileScores] = {}

    def _read_headers(self) -> None:
        files = sorted(p for p in self.folder.glob("*.h5") if p.is_file())
        for path in files:
            with open_h5(path) as f:
                if f.attrs.get("format") != ATTENTION_FORMAT:
                    continue  # not an attention file (a feature file, say)
                sid, pid = str(f.attrs["slide_id"]), str(f.attrs["patient_id"])
                self._files[sid] = path
                self._slides.setdefault(pid, []).append(sid)
                self._header[pid] = (float(f.attrs["crcrs"]), str(f.attrs["risk_group"]))
                reference = f.attrs.get("contribution_reference")  # absent in older files
                if reference is not None and np.isfinite(float(reference)):
                    self._reference = float(reference)
        if not self._files:
            raise InputError(f"{self.folder}: no attention files (crcrs predict --attention)")

    def patients(self) -> list[PatientRow]:
        """Every patient in the files, with the outcome from the table where it has one."""
        rows = []
        for pid, slides in self._slides.items():
            crcrs, group = self._header[pid]
            time = event = None
            if self.time_unit is not None and pid in self.cohort.patients.index:
                time = _number(self.cohort.patients.loc[pid, "time"])
                event = _integer(self.cohort.patients.loc[pid, "event"])
            rows.append(PatientRow(pid, tuple(slides), crcrs, group, time, event))
        return rows

    def scores(self, patient_id: str) -> TileScores:
        """The patient's tile scores as the files hold them (slides in file order)."""
        if patient_id not in self._scores:
            self._scores[patient_id] = self._read(patient_id)
        return self._scores[patient_id]

    def _read(self, patient_id: str) -> TileScores:
        slides = self._slides[patient_id]
        parts: dict[str, list[np.ndarray]] = {"coords": [], "attention": [], "contribution": []}
        for sid in slides:
            with open_h5(self._files[sid]) as f:
                for name, arrays in parts.items():
                    arrays.append(np.asarray(f[name][()]))
        sizes = [len(a) for a in parts["attention"]]
        return TileScores(
            patient_id=patient_id,
            crcrs=self._header[patient_id][0],
            slide_ids=tuple(slides),
            tile_slide=np.repeat(np.arange(len(slides)), sizes).astype(np.int64),
            coords=np.concatenate(parts["coords"]).astype(np.int64).reshape(-1, 2),
            attention=np.concatenate(parts["attention"]).astype(np.float64),
            contribution=np.concatenate(parts["contribution"]).astype(np.float64),
        )

    def tile_edge(self, slide_id: str, coords: np.ndarray) -> float:
        """The slide's tile edge in level-0 pixels: from its feature file when given, else the
        grid step of its coords."""
        if self.store is not None and slide_id in self.store:
            return tile_edge_level0(self.store.info(slide_id), coords)
        info = BagInfo(self._files[slide_id], "attention", slide_id, len(coords), 0, "float32")
        return tile_edge_level0(info, coords)

    def level0_size(self, slide_id: str) -> tuple[int, int] | None:
        """The slide size the feature file records, when the feature files were given."""
        return _recorded_size(self.store, slide_id)

    def reference(self) -> float | None:
        """What the files' contributions are measured against (None in files written before
        they recorded it)."""
        return self._reference


def _recorded_size(store: FeatureStore | None, slide_id: str) -> tuple[int, int] | None:
    if store is None or slide_id not in store:
        return None
    info = store.info(slide_id)
    if not (info.level0_width and info.level0_height):
        return None
    return int(info.level0_width), int(info.level0_height)


def _number(value: object) -> float | None:
    out = float(value)  # type: ignore[arg-type]
    return None if math.isnan(out) else out


def _integer(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def slides_in(folders: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """Slide id -> file for the slides found in ``folders`` (not recursive), keeping only files
    that resolve inside their folder: a symbolic link out of a folder is never served.

    Raises
    ------
    InputError
        if a folder does not exist or holds no slide.
    """
    from feature_extraction.reading.slides import find_slides

    roots = [Path(f).resolve() for f in folders]
    for folder in folders:
        if not Path(folder).is_dir():
            raise InputError(f"{folder}: no such slide folder")
    found = {}
    for path in find_slides(folders):
        real = path.resolve()
        if any(real.is_relative_to(root) for root in roots) and real.is_file():
            found[path.stem] = real
    if not found:
        raise InputError(f"{', '.join(map(str, folders))}: no slides inside the folder(s)")
    return found


def open_scores(
    model: str | os.PathLike | None = None,
    attention: str | os.PathLike | None = None,
    features: str | os.PathLike | None = None,
    clinical: str | os.PathLike | None = None,
    columns: Columns | None = None,
    time_unit: str | None = None,
) -> ModelScores | AttentionFileScores:
    """The viewer's score source: a model directory with the feature files, or an attention
    folder (with the feature files for their tile size and a table for the outcome, optional).

    Raises
    ------
    SettingError
        for neither or both of ``model`` and ``attention``, or a model without ``features``.
    """
    from mil_crcrs.data.cohort import read_cohort
    from mil_crcrs.data.inputs import open_inputs
    from mil_crcrs.data.tables import Columns

    columns = columns or Columns()
    if (model is None) == (attention is None):
        raise SettingError("model", "or --heatmaps: give exactly one of them")
    if model is not None:
        from mil_crcrs.ensemble import CRCRSModel

        if features is None:
            raise SettingError("features", "are needed with --model (the tiles to score)")
        loaded = CRCRSModel.load(model)
        inputs = open_inputs(features, clinical, columns, time_unit or loaded.time_unit)
        loaded.check_features(inputs.bags.feature_dim, inputs.bags.encoder, str(features))
        return ModelScores(loaded, inputs)
    cohort = None
    if clinical is not None:
        cohort = read_cohort(clinical, columns, time_unit or "days", require_outcome=False)
    store = FeatureStore(features) if features is not None else None
    return AttentionFileScores(attention, cohort, store)
