"""Batched JPEG decode on a device: the GPU path of the direct reader.

A loader worker reads the compressed file tiles under each block of a loader item
(:func:`pack_blocks`); the main process decodes them all in one call of torchvision's
``decode_jpeg`` on the encoder's device (nvjpeg on a GPU), assembles each block's region, cuts
it at its corner (shifting by linear interpolation where the corner is fractional, as OpenSlide
does), resizes it there (antialiased bilinear, Pillow's filter up to rounding) and cuts the tiles
(:func:`decode_blocks`). The same code runs on the CPU, which the tests use.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from feature_extraction.reading.direct import JpegLevel


@dataclass
class PackedBlocks:
    """The compressed tiles of a loader item's blocks, for :func:`decode_blocks`.

    Attributes
    ----------
    streams : one uint8 tensor per distinct file tile (complete JPEG streams)
    index : per block, (ny, nx) int64 positions into ``streams``; -1 = white
    geometry : (n_blocks, 8) float64 rows: crop left, top, width, height in the canvas of the
        block's file tiles; output width, height; width and height of the canvas that lies
        inside the level (white beyond)
    cells : per block, (m, 2) int64 (row, col) pixel corners of its tiles in the output region
    """

    streams: list
    index: list
    geometry: np.ndarray
    cells: list


def pack_blocks(level: JpegLevel, reads: list[tuple]) -> PackedBlocks:
    """Read the compressed file tiles under each block.

    Parameters
    ----------
    level : the level read
    reads : per block ``(x, y, w, h, out_w, out_h, cells)``: the region in level pixels, its
        output size, and its tiles' (row, col) pixel corners in the output, (m, 2)
    """
    wanted: dict[int, int] = {}
    index, geometry, cells = [], [], []
    for x, y, w, h, out_w, out_h, block_cells in reads:
        grid, tx0, ty0 = level.cover(x, y, w, h)
        valid = grid >= 0
        valid[valid] = level.counts[grid[valid]] > 0
        pos = np.full(grid.shape, -1, np.int64)
        for k in zip(*np.nonzero(valid), strict=True):
            pos[k] = wanted.setdefault(int(grid[k]), len(wanted))
        index.append(torch.from_numpy(pos))
        left, top = x - tx0 * level.tile_width, y - ty0 * level.tile_height
        inside_w = level.width - tx0 * level.tile_width
        inside_h = level.height - ty0 * level.tile_height
        geometry.append((left, top, w, h, out_w, out_h, inside_w, inside_h))
        cells.append(torch.as_tensor(np.asarray(block_cells, np.int64)))
    streams = level.tile_streams(np.fromiter(wanted, np.int64, len(wanted)))
    tensors = [torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in streams]
    return PackedBlocks(tensors, index, np.asarray(geometry, np.float64).reshape(-1, 8), cells)


def _cut(canvas: torch.Tensor, left: float, top: float, w: int, h: int) -> torch.Tensor:
    """(3, h, w) uint8 from (3, H, W) at a corner that may be fractional (linear interpolation
    then, as OpenSlide and :func:`_crop_resize` do)."""
    x, y = int(left), int(top)
    fx, fy = left - x, top - y
    if fx == 0 and fy == 0:
        return canvas[:, y : y + h, x : x + w]
    region = canvas[:, y : y + h + (fy > 0), x : x + w + (fx > 0)].float()
    if fy > 0:
        region = region[:, :h] * (1 - fy) + region[:, 1 : h + 1] * fy
    if fx > 0:
        region = region[:, :, :w] * (1 - fx) + region[:, :, 1 : w + 1] * fx
    return region.round_().clamp_(0, 255).to(torch.uint8)


def decode_blocks(packed: PackedBlocks, tile_size: int, device) -> torch.Tensor:
    """Decode the packed tiles on ``device`` in one batch, then crop, resize and cut there.

    The resize is torch's antialiased bilinear (Pillow's filter, up to rounding).

    Returns
    -------
    (n_tiles, tile_size, tile_size, 3) uint8 on ``device``, blocks in order
    """
    from torch.nn import functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    if packed.streams:
        with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec, not there yet
            warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
            images = decode_jpeg(packed.streams, mode=ImageReadMode.RGB, device=device)
        images = list(images) if isinstance(images, list | tuple) else [images]
        stack = torch.stack(images)
    else:
        stack = torch.empty((0, 3, 1, 1), dtype=torch.uint8, device=device)
    n, _, th, tw = stack.shape if len(stack) else (0, 3, 1, 1)
    white = torch.full((1, 3, th, tw), 255, dtype=torch.uint8, device=device)
    stack = torch.cat([stack, white])
    out = []
    for pos, (left, top, *sizes), cells in zip(
        packed.index, packed.geometry.tolist(), packed.cells, strict=True
    ):
        w, h, out_w, out_h, in_w, in_h = (int(v) for v in sizes)
        ny, nx = pos.shape
        pick = torch.where(pos < 0, n, pos).reshape(-1).to(device)
        canvas = stack[pick].view(ny, nx, 3, th, tw).permute(2, 0, 3, 1, 4).reshape(3, ny * th, -1)
        if in_w < canvas.shape[2] or in_h < canvas.shape[1]:
            canvas = canvas.clone()
            canvas[:, :, max(0, in_w) :] = 255
            canvas[:, max(0, in_h) :, :] = 255
        region = _cut(canvas, left, top, w, h)
        if (w, h) != (out_w, out_h):
            region = (
                F.interpolate(
                    region[None].float(),
                    size=(out_h, out_w),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )[0]
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
            )
        rows, cols = cells[:, 0].tolist(), cells[:, 1].tolist()
        tiles = [
            region[:, r : r + tile_size, c : c + tile_size] for r, c in zip(rows, cols, strict=True)
        ]
        out.append(torch.stack(tiles).permute(0, 2, 3, 1))
    return torch.cat(out).contiguous()
