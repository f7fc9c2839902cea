"""Fold checkpoints: a killed fit resumes where it stopped, and ends as if never interrupted.

:func:`~mil_crcrs.fitting.fit` trains K fold models one after the other. With a checkpoint
folder, each finished fold is saved there as two files, both written atomically:

- ``seed<s>_fold<k>.pt``: the fold model's weights, a plain ``state_dict`` (read back with
  ``torch.load(weights_only=True)``, so loading never runs pickled code);
- ``seed<s>_fold<k>.json``: what the fit needs from the fold besides the weights (its risk of
  every training patient, centre and scale, its metrics row) and the hash of the fit it belongs
  to. It is written after the weights, so its presence says the fold is complete.

``checkpoint.json`` records the hash and what it was computed from: the fit settings (without
``progress``, which does not change the result), the device kind, the package and torch versions,
the cohort (patients, slides, times, events) and the feature files (names, sizes, modification
times). A resumed fit with another hash is refused, never mixed. Every fold's model depends only
on its own seeds (:func:`~mil_crcrs.train.loop.seeded` forks torch's generator), so training only
the missing folds gives, on the CPU, a model bitwise identical to an uninterrupted fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mil_crcrs._version import __version__
from mil_crcrs.atomic import atomic_path, save_tensors, write_json
from mil_crcrs.data.cohort import Cohort
from mil_crcrs.data.store import FeatureStore
from mil_crcrs.errors import InputError

MANIFEST_NAME = "checkpoint.json"
#: Settings fields that do not change the fitted model.
UNHASHED_FIELDS = ("progress",)


@dataclass
class FoldCheckpoint:
    """One finished fold, as saved.

    Attributes
    ----------
    state : the fold model's ``state_dict``
    risk : (n_patients,) float64, the fold model's risk of every patient of the cohort
    info : JSON-able facts of the fold (best epoch, inner-validation C, history, ...)
    """

    state: dict[str, torch.Tensor]
    risk: np.ndarray
    info: dict[str, Any]


def fit_record(
    settings: Any,
    device: torch.device | str,
    patient_ids: list[str],
    slides: Mapping[str, tuple[str, ...]],
    time: np.ndarray,
    event: np.ndarray,
    feature_paths: list[Path],
) -> dict[str, Any]:
    """What decides the fold models of a fit, as a JSON-able record (hashed by :func:`digest`)."""
    settings = asdict(settings) if is_dataclass(settings) else dict(settings)
    for name in UNHASHED_FIELDS:
        settings.pop(name, None)
    cohort = hashlib.sha256()
    for pid, t, e in zip(patient_ids, np.asarray(time, float), np.asarray(event, int), strict=True):
        cohort.update(json.dumps([pid, list(slides[pid]), float(t).hex(), int(e)]).encode())
    files = hashlib.sha256()
    for path in sorted(feature_paths):
        stat = path.stat()
        files.update(json.dumps([path.name, stat.st_size, stat.st_mtime_ns]).encode())
    return {
        "settings": settings,
        "device": torch.device(device).type,
        "package_version": __version__,
        "torch_version": torch.__version__,
        "n_patients": len(patient_ids),
        "cohort_sha256": cohort.hexdigest(),
        "feature_files_sha256": files.hexdigest(),
    }


def digest(record: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the record as sorted JSON."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FoldCheckpoints:
    """The checkpoint folder of one fit.

    Parameters
    ----------
    folder : where the fold checkpoints live (created)
    record : what the fit depends on (:func:`fit_record`)
    resume : use the folds already there; without it, a folder of another fit is cleared

    Raises
    ------
    InputError
        with ``resume``, when the folder holds checkpoints of a fit with other settings, data or
        versions (the message names what differs).
    """

    def __init__(self, folder: str | os.PathLike, record: dict[str, Any], resume: bool) -> None:
        self.folder = Path(folder)
        self.record = record
        self.hash = digest(record)
        manifest = self.folder / MANIFEST_NAME
        saved = _read_json(manifest) if manifest.is_file() else None
        if resume and saved is not None and saved.get("hash") != self.hash:
            changed = [
                key
                for key in sorted(set(record) | set(saved.get("record", {})))
                if record.get(key) != saved.get("record", {}).get(key)
            ]
            raise InputError(
                f"{self.folder}: checkpoints of a fit with other "
                f"{', '.join(changed) or 'inputs'} (hash {saved.get('hash')}, now {self.hash}); "
                "fit again without resume to start over"
            )
        if not resume and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if saved is None or saved.get("hash") != self.hash:
            write_json(manifest, {"hash": self.hash, "record": record})

    def load(self, key: str, model: torch.nn.Module) -> FoldCheckpoint | None:
        """The model saved under ``key`` (e.g. ``seed0_fold3``) by this fit, else None.

        ``model`` (a freshly built fold model) tells which weights fit; checkpoints that do not
        fit it, or that are unreadable, are treated as absent (the fold is trained again).
        """
        info_path, weights_path = self._paths(key)
        if not info_path.is_file() or not weights_path.is_file():
            return None
        info = _read_json(info_path)
        if info is None or info.get("hash") != self.hash:
            return None
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception:  # torch raises many types for a bad file; a refused one included
            return None
        expected = model.state_dict()
        if not isinstance(state, dict) or set(state) != set(expected):
            return None
        if any(
            not isinstance(state[key], torch.Tensor) or state[key].shape != value.shape
            for key, value in expected.items()
        ):
            return None
        risk = np.asarray(info.pop("risk"), dtype=np.float64)
        return FoldCheckpoint(state=state, risk=risk, info=info)

    def save(
        self, key: str, model: torch.nn.Module, risk: np.ndarray, info: dict[str, Any]
    ) -> None:
        """Save a finished model under ``key``: weights first, then the record that commits it."""
        info_path, weights_path = self._paths(key)
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        with atomic_path(weights_path, suffix=".pt.tmp") as tmp:
            save_tensors(state, tmp)
        record = {
            **info,
            "key": key,
            "hash": self.hash,
            # JSON floats are Python's shortest round-tripping repr: read back bit for bit
            "risk": np.asarray(risk, np.float64).tolist(),
        }
        write_json(info_path, record, nan_as_null=False)  # read back as the fit made it

    def finished(self) -> list[str]:
        """The keys of the models saved by this fit."""
        out = []
        for path in sorted(self.folder.glob("*.json")):
            info = _read_json(path)
            if info is not None and info.get("hash") == self.hash and "key" in info:
                out.append(str(info["key"]))
        return sorted(out)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.json", self.folder / f"{key}.pt"


def fold_checkpoints(
    folder: str | os.PathLike | None,
    resume: bool,
    settings: Any,
    device: torch.device | str,
    cohort: Cohort,
    store: FeatureStore,
) -> FoldCheckpoints | None:
    """The checkpoint folder of a fit of ``cohort`` on ``store`` (None without a folder)."""
    if folder is None:
        if resume:
            raise InputError("resume needs a checkpoint folder")
        return None
    paths = [store.path(s) for slides in cohort.slides.values() for s in slides]
    record = fit_record(
        settings, device, cohort.patient_ids, cohort.slides, cohort.time, cohort.event, paths
    )
    return FoldCheckpoints(folder, record, resume)


def checkpoint_folder(model_dir: str | os.PathLike) -> Path:
    """Where ``crcrs fit --out DIR`` keeps its fold checkpoints: ``.DIR.checkpoints`` beside it."""
    model_dir = Path(model_dir)
    return model_dir.parent / f".{model_dir.name}.checkpoints"


def remove_checkpoints(folder: str | os.PathLike) -> None:
    """Delete a checkpoint folder (once the fitted model is saved)."""
    shutil.rmtree(folder, ignore_errors=True)


def drop_unused_checkpoints(folder: str | os.PathLike) -> None:
    """Delete a checkpoint folder that holds no finished model (a fit refused before its first
    fold), so a refused fit leaves nothing behind; one with finished models is kept for
    ``--resume``."""
    folder = Path(folder)
    if folder.is_dir() and not any(folder.glob("*.pt")):
        remove_checkpoints(folder)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
