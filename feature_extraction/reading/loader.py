"""Loader items of ``crcrs extract``: blocks of tiles read with OpenSlide or straight from the file.

A loader item is a :class:`Work`: a batch of one slide's tiles, grouped into blocks of
neighbouring tiles that are each read as one region from the slide's best pyramid level. The
:class:`SlideReader` dataset turns a :class:`Work` into uint8 tiles (OpenSlide, or the direct
reader decoding on the CPU) or into the compressed file tiles for a batched decode on the GPU
(:func:`feature_extraction.reading.direct_batch.decode_blocks`). Its workers live across slides: every
item names its slide, and each worker keeps its last slides open.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_extraction.reading.direct import JpegLevel, NotDirect, open_jpeg_level
from feature_extraction.reading.direct_batch import PackedBlocks, pack_blocks
from feature_extraction.reading.slides import READ_ERROR, Slide, SlideError

#: Ways a slide's tiles are read: OpenSlide; the direct reader decoding in the loader workers;
#: the direct reader handing compressed tiles to a batched decode on the encoder's device.
OPENSLIDE, DIRECT_CPU, DIRECT_DEVICE = "openslide", "direct-cpu", "direct-device"


@dataclass(frozen=True)
class ReadSpec:
    """How one slide's tiles are read.

    Attributes
    ----------
    kind : :data:`OPENSLIDE`, :data:`DIRECT_CPU` or :data:`DIRECT_DEVICE`
    level : the pyramid level read (the coarsest that needs no enlarging)
    downsample : that level's downsample
    level_size : that level's (width, height)
    """

    kind: str
    level: int
    downsample: float
    level_size: tuple[int, int]


@dataclass(frozen=True)
class Work:
    """One loader item: ``blocks`` of slide ``seq`` (its ``index``-th item); seq -1 = nothing."""

    seq: int
    index: int
    path: Path | None = None
    slide_mpp: float | None = None
    read: ReadSpec | None = None
    blocks: tuple[np.ndarray, ...] = ()
    tile_size_level0: int = 0
    tile_size_px: int = 0


#: An item with no tiles: keeps a loader that waits for the next slide's plan responsive.
IDLE = Work(seq=-1, index=-1)


def block_geometry(
    block: np.ndarray, size0: int, size: int, downsample: float
) -> tuple[int, int, int, int, int, int, np.ndarray]:
    """Where one block of tiles lies and how it is cut.

    Parameters
    ----------
    block : (m, 2) int64 level-0 top-left tile corners
    size0, size : tile edge in level-0 pixels and in output pixels
    downsample : downsample of the level read

    Returns
    -------
    x0, y0 : the block's level-0 top-left corner
    read_w, read_h : the region to read, in pixels of the level
    out_w, out_h : the region's size at the output resolution
    cells : (m, 2) int64 (row, col) of each tile's corner in the output region
    """
    x0, y0 = (int(v) for v in block.min(axis=0))
    x1, y1 = (int(v) + size0 for v in block.max(axis=0))
    read_w, read_h = max(1, round((x1 - x0) / downsample)), max(1, round((y1 - y0) / downsample))
    out_w, out_h = (x1 - x0) // size0 * size, (y1 - y0) // size0 * size
    cells = np.stack([(block[:, 1] - y0) // size0 * size, (block[:, 0] - x0) // size0 * size], 1)
    return x0, y0, read_w, read_h, out_w, out_h, cells.astype(np.int64)


def cut(region: np.ndarray, cells: np.ndarray, size: int) -> np.ndarray:
    """(m, size, size, 3) tiles of ``region`` at ``cells`` (row, col)."""
    return np.stack([region[r : r + size, c : c + size] for r, c in cells.tolist()])


def resize(region: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Pillow's bilinear resize (antialiased when shrinking), a no-op at the same size."""
    from PIL import Image

    if region.shape[:2] == (out_h, out_w):
        return region
    image = Image.fromarray(region).resize((int(out_w), int(out_h)), Image.Resampling.BILINEAR)
    return np.asarray(image)


def read_block_openslide(slide: Slide, block: np.ndarray, size0: int, size: int) -> np.ndarray:
    """(m, size, size, 3) uint8 tiles of one block, read with OpenSlide as one region."""
    level = slide.best_level(size0 / size)
    ds = slide.level_downsamples[level]
    x0, y0, read_w, read_h, out_w, out_h, cells = block_geometry(block, size0, size, ds)
    region = slide.read_region((x0, y0), level, (read_w, read_h))
    return cut(resize(region, out_w, out_h), cells, size)


def read_block_direct(
    jpeg: JpegLevel, block: np.ndarray, size0: int, size: int, downsample: float
) -> np.ndarray:
    """(m, size, size, 3) uint8 tiles of one block, decoded from the file's JPEG tiles here."""
    return read_blocks_direct(jpeg, [block], size0, size, downsample)[0]


def read_blocks_direct(
    jpeg: JpegLevel, blocks: list[np.ndarray], size0: int, size: int, downsample: float
) -> list[np.ndarray]:
    """The tiles of several blocks, each file tile they share decoded once."""
    regions, cells = [], []
    for block in blocks:
        x0, y0, read_w, read_h, out_w, out_h, block_cells = block_geometry(
            block, size0, size, downsample
        )
        regions.append((x0 / downsample, y0 / downsample, read_w, read_h, out_w, out_h))
        cells.append(block_cells)
    images = jpeg.read_regions(regions)
    return [cut(image, c, size) for image, c in zip(images, cells, strict=True)]


class TileBlocks(torch.utils.data.Dataset):
    """Loader items of one slide: each is a batch of tiles read as a few large regions.

    ``dataset[i]`` is ``{"tiles": (n, T, T, 3) uint8, "coords": (n, 2) int64}``, or
    ``{"error": (reason, message)}`` when the slide cannot be read (so the main process can
    record it).
    """

    def __init__(
        self,
        path: Path,
        slide_mpp: float | None,
        items: list[list[np.ndarray]],
        tile_size_level0: int,
        tile_size_px: int,
    ) -> None:
        self.path = path
        self.slide_mpp = slide_mpp
        self.items = items
        self.size0 = tile_size_level0
        self.size = tile_size_px
        self._slide: Slide | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _open(self) -> Slide:
        # One handle per process: OpenSlide handles are not shared across fork.
        if self._slide is None or self._pid != os.getpid():
            self._slide = Slide(self.path, mpp=self.slide_mpp)
            self._pid = os.getpid()
        return self._slide

    def close(self) -> None:
        """Close this process's slide handle."""
        if self._slide is not None and self._pid == os.getpid():
            self._slide.close()
        self._slide = None

    def read_block(self, slide: Slide, block: np.ndarray) -> np.ndarray:
        """(m, 2) level-0 corners -> (m, T, T, 3) uint8 tiles, read as one region."""
        return read_block_openslide(slide, block, self.size0, self.size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        blocks = self.items[index]
        try:
            slide = self._open()
            tiles = np.concatenate([self.read_block(slide, b) for b in blocks])
        except SlideError as exc:
            return {"error": (exc.reason, str(exc))}
        return {
            "tiles": torch.from_numpy(tiles),
            "coords": torch.from_numpy(np.concatenate(blocks).astype(np.int64)),
        }


class SlideReader(torch.utils.data.Dataset):
    """Reads :class:`Work` items of any slide; indexed by the items themselves.

    ``reader[work]`` is ``{"seq", "index", "coords": (n, 2) int64}`` plus ``"tiles"``
    ((n, T, T, 3) uint8) or ``"packed"`` (:class:`~feature_extraction.reading.direct.PackedBlocks`), or
    ``{"seq", "index", "error": (reason, message)}`` when the slide cannot be read.
    """

    def __init__(self, keep_open: int = 2) -> None:
        self.keep_open = keep_open
        self._open: OrderedDict[tuple[Path, str], Any] = OrderedDict()
        self._pid: int | None = None

    def __len__(self) -> int:  # items come from the sampler, not from an index range
        raise TypeError("SlideReader is indexed by Work items")

    def _handle(self, work: Work) -> Slide | JpegLevel:
        if self._pid != os.getpid():  # handles are not shared across fork
            self._open, self._pid = OrderedDict(), os.getpid()
        key = (work.path, work.read.kind)
        if key not in self._open:
            if work.read.kind == OPENSLIDE:
                self._open[key] = Slide(work.path, mpp=work.slide_mpp)
            else:
                self._open[key] = open_jpeg_level(work.path, work.read.level_size)
            while len(self._open) > self.keep_open:
                self._open.popitem(last=False)[1].close()
        self._open.move_to_end(key)
        return self._open[key]

    def close(self) -> None:
        """Close this process's handles."""
        if self._pid == os.getpid():
            for handle in self._open.values():
                handle.close()
        self._open = OrderedDict()

    def __getitem__(self, work: Work) -> dict[str, Any]:
        head = {"seq": work.seq, "index": work.index}
        if work.seq < 0:
            return head
        size0, size, read = work.tile_size_level0, work.tile_size_px, work.read
        coords = torch.from_numpy(np.concatenate(work.blocks).astype(np.int64))
        try:
            handle = self._handle(work)
            if read.kind == OPENSLIDE:
                tiles = [read_block_openslide(handle, b, size0, size) for b in work.blocks]
            elif read.kind == DIRECT_CPU:
                tiles = read_blocks_direct(handle, list(work.blocks), size0, size, read.downsample)
            else:
                return {**head, "coords": coords, "packed": pack_work(handle, work)}
        except SlideError as exc:
            return {**head, "error": (exc.reason, str(exc))}
        except (OSError, ValueError, SyntaxError, RuntimeError, NotDirect) as exc:  # corrupt data
            message = f"{work.path}: cannot decode its JPEG tiles ({type(exc).__name__}: {exc})"
            return {**head, "error": (READ_ERROR, " ".join(message.split()))}
        return {**head, "coords": coords, "tiles": torch.from_numpy(np.concatenate(tiles))}


def pack_work(jpeg: JpegLevel, work: Work) -> PackedBlocks:
    """The compressed file tiles under a loader item's blocks, for
    :func:`~feature_extraction.reading.direct_batch.decode_blocks` on the encoder's device."""
    ds = work.read.downsample
    reads = []
    for block in work.blocks:
        x0, y0, read_w, read_h, out_w, out_h, cells = block_geometry(
            block, work.tile_size_level0, work.tile_size_px, ds
        )
        reads.append((x0 / ds, y0 / ds, read_w, read_h, out_w, out_h, cells))
    return pack_blocks(jpeg, reads)
