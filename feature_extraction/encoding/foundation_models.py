"""Pathology foundation models that timm builds from a model-hub id.

``uni`` (MahmoodLab/uni, ViT-L/16, 1024-d), ``uni2-h`` (MahmoodLab/UNI2-h, ViT-H/14, 1536-d) and
``gigapath`` (prov-gigapath, ViT-g/14, 1536-d), each with its own normalisation and a fixed
224-px input (:data:`FOUNDATION_MODELS`, registered by :mod:`feature_extraction.encoding.encoders`). The
hub models are gated: log in with ``hf auth login`` once, or download the weights and pass the
file (or the snapshot folder) as ``weights``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from feature_extraction.encoding.tile_encoder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Encoder,
    EncoderSpec,
)
from feature_extraction.encoding.weights import RANDOM, create_timm, weights_label


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


def hub_factory(name: str, hub: HubModel) -> Callable[[str | None], Encoder]:
    """``factory(weights) -> Encoder`` of a foundation model, for the encoder registry.

    ``weights`` None downloads the hub weights; a folder is a hub snapshot; a file is loaded
    into the network built without the hub (``arch``); ``"random"`` builds that network
    untrained.
    """

    def factory(weights: str | None) -> Encoder:
        if weights is None:
            model = create_timm(hub.hub_id, None, **hub.hub_kwargs())
        elif weights != RANDOM and Path(weights).is_dir():
            model = create_timm(f"local-dir:{weights}", None, **hub.hub_kwargs())
        else:
            model = create_timm(hub.arch, weights, **hub.arch_kwargs())
        label, sha = weights_label(weights, f"hub:{hub.hub_id}")
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

    return factory


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


#: The foundation models by registry name.
FOUNDATION_MODELS: dict[str, HubModel] = {
    "uni": HubModel(
        "hf-hub:MahmoodLab/uni",
        lambda: {"init_values": 1e-5, "dynamic_img_size": True},
        "vit_large_patch16_224",
        _uni_kwargs,
    ),
    "uni2-h": HubModel(
        "hf-hub:MahmoodLab/UNI2-h", _uni2_kwargs, "vit_giant_patch14_224", _uni2_kwargs
    ),
    "gigapath": HubModel(
        "hf-hub:prov-gigapath/prov-gigapath", dict, "vit_giant_patch14_dinov2", _gigapath_kwargs
    ),
}
