"""What a tile encoder is: :class:`EncoderSpec` and :class:`Encoder`.

An encoder declares its input size, normalisation and output dim in an :class:`EncoderSpec`,
which every feature file records; :class:`Encoder` preprocesses uint8 tiles accordingly and maps
them to features. The registry of named encoders is :mod:`feature_extraction.encoding.encoders`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from feature_extraction.encoding.weights import RANDOM

#: ImageNet normalisation (RGB scaled to [0, 1]), the convention of most encoders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
