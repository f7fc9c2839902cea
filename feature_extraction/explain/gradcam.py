"""Grad-CAM through the encoder: which pixels of a tile drive the patient's CRCRS.

For a selected tile of a patient, the tile's pixels are re-embedded by the encoder **with
gradients**, the new feature replaces the tile's row of the patient's bag while every other tile
keeps its stored feature, and the patient's CRCRS (the mean over the fold models of their centred
risks, :mod:`mil_crcrs.model_dir`) is back-propagated through the MIL head and the encoder:

- CNN encoders: captum's :class:`~captum.attr.LayerGradCam` on the encoder's last convolutional
  feature map (the map the encoder pools into its feature; :func:`target_layer`);
- ViT encoders: the same on the patch tokens entering the last block, reshaped to their (h, w)
  grid (prefix tokens such as CLS or registers pass through untouched). The tokens entering it,
  because a ViT pooled on its CLS token ignores the patch tokens the last block puts out.

The map is upsampled over the tile (bilinear) and overlaid on it.

Before anything is drawn, :func:`~feature_extraction.explain.encoder.check_reembedding` checks
that the encoder reproduces the tile's stored feature from its pixels. If it does not, the
features were made by another encoder, other weights or other preprocessing, and a map would
explain a model the features never met: that is an :class:`~mil_crcrs.errors.InputError` naming
the encoder.

:class:`GradCAMSettings` also holds the settings of the optional feature-level view, integrated
gradients (:mod:`mil_crcrs.explain.integrated_gradients`, no encoder needed), which the heatmap
job runs alongside Grad-CAM.

captum is imported inside the function that uses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from feature_extraction.encoding.tile_encoder import Encoder
from feature_extraction.explain.encoder import check_reembedding
from mil_crcrs.data.bags import PatientBag
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.explain.integrated_gradients import IG_BASELINES, bag_tensors
from mil_crcrs.explain.paint import overlay


@dataclass(frozen=True)
class GradCAMSettings:
    """How Grad-CAM (and the optional feature-level integrated gradients) run.

    Parameters
    ----------
    tolerance : largest relative L2 error ``|f_new - f_stored| / |f_stored|`` allowed between a
        tile's re-embedded and stored feature (float16 storage costs ~1e-3, bf16 extraction
        ~1e-2; another encoder or other weights give errors near 1)
    cmap : matplotlib colormap of the overlay
    alpha : opacity of the overlay
    integrated_gradients : also compute feature-level integrated gradients per tile
    ig_steps : integration steps of the integrated gradients
    ig_baseline : "zeros" (every feature zero) or "bag_mean" (every tile replaced by the mean of
        the patient's tiles)
    """

    tolerance: float = 0.05
    cmap: str = "jet"
    alpha: float = 0.45
    integrated_gradients: bool = False
    ig_steps: int = 32
    ig_baseline: str = "zeros"

    def __post_init__(self) -> None:
        if not self.tolerance > 0:
            raise SettingError(
                "tolerance", f"of the re-embedding check must be positive, got {self.tolerance}"
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise SettingError(
                "alpha", f"of the Grad-CAM overlay must be in [0, 1], got {self.alpha}"
            )
        if self.ig_steps < 2:
            raise SettingError("ig_steps", f"must be at least 2, got {self.ig_steps}")
        if self.ig_baseline not in IG_BASELINES:
            raise SettingError(
                "ig_baseline", f"must be one of {', '.join(IG_BASELINES)}, got {self.ig_baseline!r}"
            )


@dataclass(frozen=True)
class TileCAM:
    """The Grad-CAM of one tile.

    Attributes
    ----------
    bag_index : the tile's row in the patient's bag
    tile : (h, w, 3) uint8, the tile as the encoder saw it (before resizing/normalisation)
    cam : (h, w) float64 in [0, 1], the class-activation map upsampled over the tile (1 = the
        strongest positive evidence for a higher CRCRS in this tile; all 0 when there is none)
    cam_max : the map's maximum before scaling to [0, 1]
    crcrs : the patient's CRCRS with this tile re-embedded
    reembed_error : relative L2 error of the re-embedded feature against the stored one
    """

    bag_index: int
    tile: np.ndarray
    cam: np.ndarray
    cam_max: float
    crcrs: float
    reembed_error: float


# --------------------------------------------------------------------------------------------
# The patient's CRCRS as a differentiable function of one tile's pixels


def _with_tile(base: Tensor, index: int, embedding: Tensor) -> Tensor:
    """(B, N, D) copies of ``base`` (N, D) whose row ``index`` is ``embedding`` (B, D)."""
    onehot = torch.zeros(base.shape[0], 1, dtype=torch.bool, device=base.device)
    onehot[index] = True
    return torch.where(onehot, embedding[:, None, :].to(base), base)


# --------------------------------------------------------------------------------------------
# Which layer of the encoder


def is_vit(module: nn.Module) -> bool:
    """True for a timm-style vision transformer (``blocks``, ``patch_embed``, prefix tokens)."""
    return all(hasattr(module, a) for a in ("blocks", "patch_embed", "num_prefix_tokens"))


def target_layer(encoder: Encoder) -> nn.Module:
    """The layer Grad-CAM attributes to.

    - A ViT (timm ``VisionTransformer`` and relatives): its last block, whose input patch tokens
      are reshaped to a grid by :func:`_token_grid`.
    - A CNN: the last module whose output is a feature map ``(B, C, h, w)`` with ``h, w > 1`` --
      the map the encoder then pools into its feature (timm's last stage or final conv, the
      ``layer3`` of ``resnet50_trunc``). Found by running one blank tile through the encoder.

    Raises
    ------
    InputError
        if the encoder has no spatial feature map.
    """
    net = encoder.model
    if is_vit(net):
        return net.blocks[-1]
    found: list[nn.Module] = []

    def hook(module: nn.Module, args, output) -> None:
        if isinstance(output, Tensor) and output.ndim == 4 and min(output.shape[-2:]) > 1:
            found.append(module)

    handles = [m.register_forward_hook(hook) for m in net.modules() if m is not net]
    size = max(64, encoder.spec.input_size)  # the tile size it is used at, about
    device = encoder.mean.device
    try:
        with torch.no_grad():
            encoder(torch.zeros(1, 3, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    if not found:
        raise InputError(
            f"encoder '{encoder.spec.name}': no convolutional feature map or ViT blocks found for "
            "Grad-CAM"
        )
    return found[-1]  # hooks fire inner-first, so the last is the outermost, latest map


class _TokenGrid(nn.Module):
    """Identity on the ViT's patch tokens as a (B, C, h, w) map: the layer Grad-CAM hooks."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class _GridTap(nn.Module):
    """Wraps a ViT block: the patch tokens entering it pass a :class:`_TokenGrid` as a 2-D map."""

    def __init__(self, block: nn.Module, n_prefix: int, grid_hw: tuple[int, int]) -> None:
        super().__init__()
        self.block = block
        self.grid = _TokenGrid()
        self.n_prefix = n_prefix
        self.grid_hw = grid_hw

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        prefix, patches = x[:, : self.n_prefix], x[:, self.n_prefix :]
        h, w = self.grid_hw
        if patches.shape[1] != h * w:
            raise RuntimeError(f"expected {h}x{w} patch tokens, got {patches.shape[1]}")
        b, _, c = patches.shape
        grid = self.grid(patches.transpose(1, 2).reshape(b, c, h, w))
        x = torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)
        return self.block(x, *args, **kwargs)


@contextlib.contextmanager
def _token_grid(vit: nn.Module, image_hw: tuple[int, int]) -> Iterator[nn.Module]:
    """Temporarily route the tokens entering the last block through a 2-D grid; yields it.

    The tokens *entering* the last block, not leaving it: a ViT pooled on its CLS token discards
    the patch tokens the last block outputs, so their gradient is zero; the last block's
    attention is where the patch tokens still reach the CLS token.
    """
    patch = vit.patch_embed.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    grid_hw = (image_hw[0] // ph, image_hw[1] // pw)
    last = vit.blocks[-1]
    tap = _GridTap(last, int(vit.num_prefix_tokens), grid_hw)
    vit.blocks[-1] = tap
    try:
        yield tap.grid
    finally:
        vit.blocks[-1] = last


# --------------------------------------------------------------------------------------------
# Grad-CAM


def gradcam_tiles(
    model: CRCRSModel,
    bag: PatientBag,
    indices: Sequence[int],
    tiles: np.ndarray,
    encoder: Encoder,
    settings: GradCAMSettings = GradCAMSettings(),
    source: str = "features",
) -> list[TileCAM]:
    """Grad-CAM of the patient's CRCRS for the tiles ``indices`` of ``bag``.

    Parameters
    ----------
    model : the trained ensemble
    bag : the patient's tiles with their stored features
    indices : (T,) rows of ``bag`` to explain
    tiles : (T, h, w, 3) uint8 pixels of those tiles, read as extraction read them
    encoder : the encoder that made the stored features
    settings : tolerance of the reproduction check
    source : the feature file(s), for messages

    Returns
    -------
    list of TileCAM, in the order of ``indices``

    Raises
    ------
    InputError
        if re-embedding a tile does not reproduce its stored feature (see
        :func:`check_reembedding`).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    indices = [int(i) for i in indices]
    tiles = np.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[0] != len(indices) or tiles.shape[-1] != 3:
        raise ValueError(f"tiles must be ({len(indices)}, h, w, 3) uint8, got {tiles.shape}")
    device = encoder.mean.device  # the encoder and the model each run where the caller put them
    encoder = encoder.eval()
    errors = check_reembedding(
        encoder, tiles, np.asarray(bag.features)[indices], settings.tolerance, source
    )
    base, grid = bag_tensors(model, bag)
    vit = is_vit(encoder.model)
    layer = None if vit else target_layer(encoder)
    out = []
    for index, tile, error in zip(indices, tiles, errors, strict=True):
        x = encoder.preprocess(torch.as_tensor(tile[None]).to(device))

        def crcrs_of(images: Tensor, index: int = index) -> Tensor:
            return model.risk(_with_tile(base, index, encoder(images)), grid=grid)[0]

        hook_at = (
            _token_grid(encoder.model, tuple(x.shape[-2:]))
            if vit
            else contextlib.nullcontext(layer)
        )
        with hook_at as hooked:
            with torch.no_grad():
                crcrs = float(crcrs_of(x)[0])
            cam = LayerGradCam(crcrs_of, hooked).attribute(x, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam.detach().float(), tile.shape[:2], "bilinear")
        cam = cam[0, 0].clamp_min(0.0).cpu().numpy().astype(np.float64)
        top = float(cam.max())
        out.append(
            TileCAM(
                bag_index=index,
                tile=tile,
                cam=cam / top if top > 0 else np.zeros_like(cam),
                cam_max=top,
                crcrs=crcrs,
                reembed_error=float(error),
            )
        )
    return out


def cam_overlay(tile_cam: TileCAM, cmap: str = "jet", alpha: float = 0.45) -> np.ndarray:
    """(h, w, 3) uint8: the tile with its Grad-CAM coloured over it."""
    return overlay(tile_cam.cam, tile_cam.tile, cmap, alpha)
