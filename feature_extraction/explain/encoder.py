"""The encoder that made the features: rebuilt from the feature file's record, then checked.

:func:`encoder_for_features` builds the encoder a feature file names (or the user names, for
files that do not), with the weights and preprocessing the file records. :func:`check_reembedding`
is the final word: the encoder must reproduce the tiles' stored features from their pixels, or
any Grad-CAM would explain a model the features never met.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from feature_extraction.encoding.tile_encoder import Encoder
from mil_crcrs.data.store import BagInfo, read_settings_record
from mil_crcrs.errors import InputError, SettingError


def encoder_for_features(
    info: BagInfo, weights: str | os.PathLike | None = None, name: str | None = None
) -> Encoder:
    """Build the encoder named in a feature file (or by the user), with its preprocessing.

    Where the file records the extraction settings (our format), the encoder's weights and
    preprocessing must match them: weights from a file need that file (``weights``) and its
    checksum must agree. The final word is :func:`check_reembedding`.

    Parameters
    ----------
    info : the feature file's description
    weights : the encoder's weights file, when extraction used one
    name : the encoder's registry name for files that do not record it (CLAM's files never
        do); a name that contradicts the file's own is an error

    Raises
    ------
    SettingError
        for ``encoder`` if neither the file nor ``name`` names an encoder or they disagree, and
        for ``weights`` if a weights file is needed but not given.
    InputError
        if the encoder built differs from the recorded one.
    """
    from feature_extraction.encoding.encoders import create_encoder, list_encoders
    from feature_extraction.encoding.weights import RANDOM

    record = read_settings_record(info.path)[1] if info.layout == "mil_crcrs" else None
    recorded = (record or {}).get("encoder") or info.encoder
    if recorded and name and recorded != name:
        raise SettingError(
            "encoder", f"'{name}' contradicts {info.path}: its features were made by '{recorded}'"
        )
    name = recorded or name
    if not name:
        raise SettingError(
            "encoder",
            f"NAME (one of {', '.join(list_encoders())}) is needed: {info.path} does not name "
            "its encoder and Grad-CAM needs it (with the weights file, if extraction used one)",
        )
    spec = (record or {}).get("encoder_spec") or {}
    label = str(spec.get("weights") or "")
    if label == RANDOM and weights is None:
        raise SettingError(
            "weights",
            f"file is needed: {info.path} was made by encoder '{name}' with random weights, "
            "which only that file can rebuild",
        )
    if label.startswith("file:") and weights is None:
        raise SettingError(
            "weights",
            f"file is needed: {info.path} was made by encoder '{name}' with weights file "
            f"'{label[5:]}'; pass that file",
        )
    encoder = create_encoder(name, None if weights is None else str(weights))
    if spec:
        recorded_sha = spec.get("weights_sha256")
        if (
            recorded_sha
            and encoder.spec.weights_sha256
            and recorded_sha != encoder.spec.weights_sha256
        ):
            raise InputError(
                f"{weights}: not the weights file encoder '{name}' used for {info.path} "
                f"(SHA-256 {encoder.spec.weights_sha256[:12]}..., recorded {recorded_sha[:12]}...)"
            )
        for key in ("mean", "std", "input_size", "fixed_input_size", "dim"):
            want, got = spec.get(key), getattr(encoder.spec, key)
            if want is not None and _differs(want, got):
                raise InputError(
                    f"{info.path}: encoder '{name}' now has {key}={got!r} but the features were "
                    f"made with {key}={want!r}"
                )
    return encoder


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return not np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return a != b


def reembed(encoder: Encoder, tiles: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Features (T, D) float32 of uint8 tiles (T, h, w, 3), in float32 without gradients."""
    device = encoder.mean.device
    out = []
    with torch.no_grad():
        for start in range(0, len(tiles), batch_size):
            batch = torch.as_tensor(np.ascontiguousarray(tiles[start : start + batch_size]))
            out.append(encoder(encoder.preprocess(batch.to(device))).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.spec.dim), dtype=np.float32)


def check_reembedding(
    encoder: Encoder,
    tiles: np.ndarray,
    stored: np.ndarray,
    tolerance: float = 0.05,
    source: str = "features",
) -> np.ndarray:
    """Check that the encoder reproduces the stored features of ``tiles``.

    Parameters
    ----------
    encoder : the encoder to explain
    tiles : (T, h, w, 3) uint8, read from the slide exactly as extraction read them
    stored : (T, D) the tiles' features from the feature file
    tolerance : the largest relative L2 error allowed
    source : the feature file(s), for the message

    Returns
    -------
    (T,) float64 relative L2 errors

    Raises
    ------
    InputError
        naming the encoder, when a dimension differs or an error exceeds ``tolerance``.
    """
    stored = np.asarray(stored, dtype=np.float64)
    name = encoder.spec.name
    if stored.ndim != 2 or stored.shape[1] != encoder.spec.dim:
        raise InputError(
            f"{source}: features have dim {stored.shape[-1]} but encoder '{name}' gives "
            f"{encoder.spec.dim}; Grad-CAM needs the encoder that made the features"
        )
    fresh = reembed(encoder, tiles).astype(np.float64)
    norm = np.maximum(np.linalg.norm(stored, axis=1), 1e-12)
    errors = np.linalg.norm(fresh - stored, axis=1) / norm
    worst = int(np.argmax(errors)) if errors.size else 0
    if errors.size and errors[worst] > tolerance:
        raise InputError(
            f"{source}: encoder '{name}' ({encoder.spec.weights}) does not reproduce the stored "
            f"features from the tiles' pixels (relative error {errors[worst]:.3g} > tolerance "
            f"{tolerance:g}, {int((errors > tolerance).sum())}/{errors.size} tiles); the features "
            "were made with another encoder, other weights or other preprocessing"
        )
    return errors
