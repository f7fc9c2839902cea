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

Before anything is drawn, :func:`check_reembedding` checks that the encoder reproduces the tile's
stored feature from its pixels. If it does not, the features were made by another encoder, other
weights or other preprocessing, and a map would explain a model the features never met: that is
an :class:`~mil_crcrs.errors.InputError` naming the encoder.

:func:`feature_integrated_gradients` is the optional feature-level view: captum's
:class:`~captum.attr.IntegratedGradients` of the CRCRS with respect to every tile's stored
feature, summed per tile (no encoder needed).

captum is imported inside the functions that use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from feature_extraction.encoders import Encoder
from mil_crcrs.data.bags import PatientBag
from mil_crcrs.data.cache import to_cache_dtype
from mil_crcrs.ensemble import CRCRSModel
from mil_crcrs.errors import InputError
from mil_crcrs.explain.maps import overlay

IG_BASELINES = ("zeros", "bag_mean")
#: IntegratedGradients evaluates the bag at this many floats at most per internal batch.
IG_BATCH_FLOATS = 1 << 26


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
            raise InputError(f"Grad-CAM tolerance must be positive, got {self.tolerance}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"Grad-CAM alpha must be in [0, 1], got {self.alpha}")
        if self.ig_steps < 2:
            raise InputError(f"integrated-gradients steps must be at least 2, got {self.ig_steps}")
        if self.ig_baseline not in IG_BASELINES:
            raise InputError(
                f"integrated-gradients baseline must be one of {', '.join(IG_BASELINES)}, "
                f"got {self.ig_baseline!r}"
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
# The patient's CRCRS as a differentiable function of its features


def _bag_tensors(model: CRCRSModel, bag: PatientBag) -> tuple[Tensor, Tensor]:
    """The bag's features (N, D) and grid (N, 2) on the fold models' device."""
    features = torch.as_tensor(np.asarray(bag.features, dtype=np.float32), device=model.device)
    grid = torch.as_tensor(np.asarray(bag.grid), dtype=torch.long, device=model.device)
    return features, grid


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
# The reproduction check


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
    base, grid = _bag_tensors(model, bag)
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


# --------------------------------------------------------------------------------------------
# Integrated gradients on the features


@dataclass(frozen=True)
class FeatureAttribution:
    """Integrated gradients of the CRCRS with respect to a patient's tile features.

    Attributes
    ----------
    per_tile : (n_tiles,) float64, each tile's attribution summed over feature dims
    crcrs : the patient's CRCRS
    baseline_crcrs : the CRCRS of the baseline bag
    delta : captum's convergence delta (``per_tile.sum() - (crcrs - baseline_crcrs)``)
    """

    per_tile: np.ndarray
    crcrs: float
    baseline_crcrs: float
    delta: float


def feature_integrated_gradients(
    model: CRCRSModel,
    bag: PatientBag,
    baseline: str = "zeros",
    n_steps: int = 32,
) -> FeatureAttribution:
    """captum :class:`~captum.attr.IntegratedGradients` of the CRCRS on the tile features.

    Parameters
    ----------
    model : the trained ensemble
    bag : the patient's tiles
    baseline : "zeros" or "bag_mean" (see :class:`GradCAMSettings`)
    n_steps : integration steps (Gauss-Legendre, captum's default)

    Returns
    -------
    FeatureAttribution; by completeness ``per_tile.sum()`` is close to
    ``crcrs - baseline_crcrs`` (``delta`` says how close).
    """
    from captum.attr import IntegratedGradients

    if baseline not in IG_BASELINES:
        raise InputError(f"baseline must be one of {', '.join(IG_BASELINES)}, got {baseline!r}")
    bag = to_cache_dtype(bag)  # the features as fit, predict() and patient_attention score them
    features, grid = _bag_tensors(model, bag)
    x = features[None]
    reference = torch.zeros_like(x) if baseline == "zeros" else x.mean(1, keepdim=True).expand_as(x)
    forward: Callable[[Tensor], Tensor] = lambda f: model.risk(f, grid=grid)[0]  # noqa: E731
    per_batch = max(1, min(n_steps, IG_BATCH_FLOATS // max(1, x[0].numel())))
    attributions, delta = IntegratedGradients(forward).attribute(
        x,
        baselines=reference.contiguous(),
        n_steps=n_steps,
        internal_batch_size=per_batch,
        return_convergence_delta=True,
    )
    with torch.no_grad():
        crcrs = float(forward(x)[0])
        base = float(forward(reference.contiguous())[0])
    return FeatureAttribution(
        per_tile=attributions[0].sum(-1).detach().double().cpu().numpy(),
        crcrs=crcrs,
        baseline_crcrs=base,
        delta=float(delta.reshape(-1)[0]),
    )
