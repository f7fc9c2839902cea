"""Direct reads of tiled JPEG pyramids: each file tile's compressed bytes, decoded in batches.

OpenSlide decodes every region on the CPU, tile by tile, and is the general path (every vendor
format). Where a slide's pyramid level is a tiled, JPEG-compressed TIFF page -- generic tiled
TIFF, Aperio SVS, and any other format tifffile exposes as such pages -- the bytes of the file
tiles that cover a region can be read straight from the file (tifffile gives each tile's offset
and byte count) and decoded elsewhere:

- on the GPU in batches (torchvision's ``decode_jpeg`` on a list, nvjpeg), with the crop and the
  resize on the GPU as well (:func:`feature_extraction.reading.direct_batch.decode_blocks`);
- on the CPU with libjpeg-turbo (Pillow) in the loader workers (:meth:`JpegLevel.read_region`),
  where the target is at least 4x coarser than the level read using libjpeg's DCT-domain
  scaled decode for part of the reduction (:mod:`feature_extraction.reading.dct_scale`).

Tables and colours: where the format keeps shared ``JPEGTables`` (Aperio SVS does), they are
spliced in front of each tile's data. A tile's colour coding follows what libtiff does: an Adobe
(APP14) or JFIF (APP0) marker in the stream decides; without either, the TIFF's photometric
interpretation does (Aperio's RGB-coded tiles carry none, and a decoder left to guess would read
them as YCbCr). The decision is made explicit by an Adobe marker placed in front of every tile,
which libjpeg and nvjpeg both honour.

Pixels match OpenSlide's within JPEG rounding; :mod:`feature_extraction.reading.reader_choice` checks
that on a slide's first tissue tiles before the ``auto`` reader takes the direct path.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from feature_extraction.reading.dct_scale import dct_factor, decode_cpu

_JPEG = 7  # TIFF compression tag value
_RGB, _YCBCR = 2, 6  # TIFF photometric interpretations
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"


def _adobe_marker(transform: int) -> bytes:
    """APP14 "Adobe" segment: transform 0 = components are RGB, 1 = YCbCr."""
    return b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00" + bytes([transform])


class NotDirect(Exception):
    """The slide (or the level read) cannot take the direct path; the message says why."""


def _colour_markers(stream: bytes) -> tuple[bool, bool]:
    """(has JFIF APP0, has Adobe APP14) among the segments before the first scan."""
    jfif = adobe = False
    i = 2
    while i + 4 <= len(stream) and stream[i] == 0xFF:
        marker = stream[i + 1]
        if marker in (0xDA, 0xD9):  # start of scan, end of image
            break
        length = int.from_bytes(stream[i + 2 : i + 4], "big")
        body = stream[i + 4 : i + 2 + length]
        jfif |= marker == 0xE0 and body.startswith(b"JFIF\x00")
        adobe |= marker == 0xEE and body.startswith(b"Adobe")
        i += 2 + length
    return jfif, adobe


@dataclass
class JpegLevel:
    """One pyramid level stored as a tiled JPEG TIFF page: where each tile's bytes lie.

    Attributes
    ----------
    path : the slide file
    width, height : level size in pixels
    tile_width, tile_height : file tile size in pixels (edge tiles are stored full size)
    offsets, counts : (tiles_down * tiles_across,) int64 byte offsets and counts, row by row;
        a count of 0 is a tile the scanner left out (read as white, as OpenSlide does)
    prefix : bytes each tile's data follows (after its own SOI): SOI, an Adobe marker fixing
        the colour coding, and the shared JPEG tables where the file has them
    """

    path: Path
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: np.ndarray
    counts: np.ndarray
    prefix: bytes
    _fd: int | None = None
    _pid: int | None = None

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def tiles_down(self) -> int:
        return -(-self.height // self.tile_height)

    # ---- raw bytes -----------------------------------------------------------------------

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # one descriptor per process
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def close(self) -> None:
        """Close this process's file descriptor."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def tile_streams(self, indices: np.ndarray) -> list[bytes | None]:
        """Complete JPEG streams of the tiles ``indices`` (row-major), None for left-out tiles.

        Tiles that lie close together in the file are fetched with one read.
        """
        fd = self._file()
        indices = np.asarray(indices, dtype=np.int64)
        out: list[bytes | None] = [None] * len(indices)
        order = sorted(range(len(indices)), key=lambda k: int(self.offsets[indices[k]]))
        run: list[int] = []

        def flush() -> None:
            start = int(self.offsets[indices[run[0]]])
            stop = max(int(self.offsets[indices[k]] + self.counts[indices[k]]) for k in run)
            data = os.pread(fd, stop - start, start)
            if len(data) != stop - start:
                raise OSError(f"{self.path}: file ends inside tile data (offset {start})")
            for k in run:
                a = int(self.offsets[indices[k]]) - start
                stream = data[a : a + int(self.counts[indices[k]])]
                if stream[:2] != _SOI:
                    raise OSError(f"{self.path}: tile {int(indices[k])} is not a JPEG stream")
                out[k] = self.prefix + stream[2:]
            run.clear()

        for k in order:
            i = indices[k]
            if self.counts[i] == 0:
                continue
            if run:
                last = indices[run[-1]]
                if self.offsets[i] - (self.offsets[last] + self.counts[last]) > 1 << 16:
                    flush()
            run.append(k)
        if run:
            flush()
        return out

    # ---- region geometry -----------------------------------------------------------------

    def cover(self, x: float, y: float, w: int, h: int) -> tuple[np.ndarray, int, int]:
        """The file tiles under the region ``[x, x + w) x [y, y + h)`` of this level.

        Returns
        -------
        index : (ny, nx) int64 row-major tile numbers, -1 where a tile lies outside the level
        tx0, ty0 : the tile column and row of ``index[0, 0]``
        """
        tw, th = self.tile_width, self.tile_height
        tx0, ty0 = max(0, int(x // tw)), max(0, int(y // th))
        tx1, ty1 = int(math.ceil((x + w) / tw)), int(math.ceil((y + h) / th))
        cols, rows = np.arange(tx0, max(tx1, tx0 + 1)), np.arange(ty0, max(ty1, ty0 + 1))
        index = rows[:, None] * self.tiles_across + cols[None, :]
        outside = (cols[None, :] >= self.tiles_across) | (rows[:, None] >= self.tiles_down)
        return np.where(outside, -1, index), tx0, ty0

    # ---- CPU decode ----------------------------------------------------------------------

    def read_region(
        self, x: float, y: float, size: tuple[int, int], out_size: tuple[int, int]
    ) -> np.ndarray:
        """Pixels ``[x, x + w) x [y, y + h)`` of this level, resized to ``out_size``.

        Returns
        -------
        (out_h, out_w, 3) uint8; white outside the level
        """
        return self.read_regions([(x, y, *size, *out_size)])[0]

    def read_regions(self, regions: list[tuple[float, float, int, int, int, int]]) -> list:
        """Several regions ``(x, y, w, h, out_w, out_h)`` of this level, each file tile decoded once.

        Decoded with libjpeg-turbo on this CPU (:func:`decode_many`); the resize is Pillow's
        bilinear, as on the OpenSlide path, after a DCT-domain reduction where
        :func:`~feature_extraction.reading.dct_scale.dct_factor` allows one.

        Returns
        -------
        list of (out_h, out_w, 3) uint8 arrays; white outside the level
        """
        covers, wanted = [], {}
        for x, y, w, h, out_w, _ in regions:
            f = dct_factor(w / out_w, self.tile_width, self.tile_height)
            index, tx0, ty0 = self.cover(x, y, w, h)
            for i in index[index >= 0].tolist():
                if self.counts[i] > 0:
                    wanted.setdefault((i, f), len(wanted))
            covers.append((f, index, tx0, ty0))
        decoded = decode_many(self, list(wanted))
        out = []
        for (x, y, w, h, out_w, out_h), (f, index, tx0, ty0) in zip(regions, covers, strict=True):
            tw, th = self.tile_width // f, self.tile_height // f
            canvas = np.full((index.shape[0] * th, index.shape[1] * tw, 3), 255, np.uint8)
            for (r, c), i in np.ndenumerate(index):
                if i >= 0 and self.counts[i] > 0:
                    canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = decoded[wanted[i, f]]
            # white beyond the level's edge (edge tiles are stored padded)
            canvas[:, max(0, -(-(self.width - tx0 * self.tile_width) // f)) :] = 255
            canvas[max(0, -(-(self.height - ty0 * self.tile_height) // f)) :] = 255
            left, top = x - tx0 * self.tile_width, y - ty0 * self.tile_height
            out.append(_crop_resize(canvas, (left / f, top / f, w / f, h / f), (out_w, out_h), f))
        return out


def _crop_resize(
    canvas: np.ndarray, box: tuple[float, float, float, float], out_size: tuple[int, int], f: int
) -> np.ndarray:
    """``canvas[box]`` (left, top, width, height) resized to ``out_size`` with Pillow's bilinear.

    As on the OpenSlide path: the region is cut first (a fractional corner shifts it by linear
    interpolation, as OpenSlide does), then resized. After a DCT-scaled decode (``f`` > 1) the
    cut and the rest of the reduction are one resize.
    """
    from PIL import Image

    left, top, w, h = box
    x0, y0 = int(left), int(top)
    x1, y1 = int(math.ceil(left + w)), int(math.ceil(top + h))
    if f > 1:
        image = Image.fromarray(np.ascontiguousarray(canvas[y0:y1, x0:x1]))
        inner = (left - x0, top - y0, left + w - x0, top + h - y0)
        return np.asarray(image.resize(tuple(out_size), Image.Resampling.BILINEAR, box=inner))
    if (x0, y0) == (left, top):
        region = np.ascontiguousarray(canvas[y0 : y0 + int(h), x0 : x0 + int(w)])
    else:
        image = Image.fromarray(np.ascontiguousarray(canvas[y0 : y1 + 1, x0 : x1 + 1]))
        shift = (left - x0, top - y0, left - x0 + w, top - y0 + h)
        region = np.asarray(image.resize((int(w), int(h)), Image.Resampling.BILINEAR, box=shift))
    if tuple(out_size) == (w, h):
        return region
    return np.asarray(Image.fromarray(region).resize(tuple(out_size), Image.Resampling.BILINEAR))


def decode_many(level: JpegLevel, keys: list[tuple[int, int]]) -> list[np.ndarray]:
    """Decode file tiles ``(index, dct factor)`` on this CPU; (h / f, w / f, 3) uint8 each.

    Full-size tiles go to torchvision's batched libjpeg-turbo decode (1.4-2x Pillow's rate per
    tile here: no image object per tile); DCT-scaled ones to Pillow's ``draft``.
    """
    import torch

    streams = level.tile_streams(np.array([i for i, _ in keys], np.int64))
    out: list[np.ndarray | None] = [None] * len(keys)
    full = [k for k, (_, f) in enumerate(keys) if f == 1]
    if full:
        from torchvision.io import ImageReadMode, decode_jpeg

        data = [torch.frombuffer(bytearray(streams[k]), dtype=torch.uint8) for k in full]
        with warnings.catch_warnings():  # torchvision 0.29 points to torchcodec, not there yet
            warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
            images = decode_jpeg(data, mode=ImageReadMode.RGB)
        for k, image in zip(full, images, strict=True):
            if tuple(image.shape) != (3, level.tile_height, level.tile_width):
                raise OSError(f"JPEG tile of {tuple(image.shape[1:])} px in {level.path}")
            out[k] = image.permute(1, 2, 0).numpy()
    for k, (_, f) in enumerate(keys):
        if f > 1:
            out[k] = decode_cpu(streams[k], level.tile_width // f, level.tile_height // f)
    return out


# --------------------------------------------------------------------------------------------
# Finding the level


def open_jpeg_level(path: str | os.PathLike, size: tuple[int, int]) -> JpegLevel:
    """The tiled JPEG TIFF page of ``size`` = (width, height) in the slide file.

    Raises
    ------
    NotDirect
        naming why the level cannot be read directly (not a TIFF, no such page, strips,
        another compression, not 8-bit RGB, ...).
    """
    import tifffile

    path = Path(path)
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises many kinds on non-TIFF input
        raise NotDirect(f"not a TIFF file ({type(exc).__name__})") from None
    with tif:
        page = _find_page(tif, size)
        if page is None:
            raise NotDirect(f"no TIFF page of {size[0]}x{size[1]} px (the level read)")
        why = _unfit(page)
        if why:
            raise NotDirect(f"the {size[0]}x{size[1]}-px level {why}")
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        tables = page.jpegtables
        photometric = int(page.photometric)
    level = JpegLevel(
        path, size[0], size[1], int(page.tilewidth), int(page.tilelength), offsets, counts, b""
    )
    if len(offsets) != level.tiles_across * level.tiles_down:
        raise NotDirect(f"{len(offsets)} tile offsets where the level has a different tile count")
    level.prefix = _prefix(level, tables, photometric)
    return level


def _find_page(tif, size: tuple[int, int]):
    for series in tif.series:
        for level in series.levels:
            page = level.keyframe
            if (int(page.imagewidth), int(page.imagelength)) == tuple(size):
                return page
    return None


def _unfit(page) -> str | None:
    """Why a TIFF page cannot be read directly, or None."""
    if int(page.compression) != _JPEG:
        return f"is compressed with {page.compression.name}, not JPEG"
    if not page.is_tiled:
        return "is stored in strips, not tiles"
    if page.imagedepth > 1 or page.tiledepth > 1:
        return "is a volume"
    if page.samplesperpixel != 3 or page.bitspersample != 8 or int(page.planarconfig) != 1:
        return "is not 8-bit interleaved RGB"
    if int(page.photometric) not in (_RGB, _YCBCR):
        return f"has photometric {page.photometric.name}, not RGB or YCbCr"
    return None


def _prefix(level: JpegLevel, tables: bytes | None, photometric: int) -> bytes:
    """SOI, the colour marker a decoder needs, and the shared tables without their SOI/EOI."""
    shared = b""
    if tables:
        if tables[:2] != _SOI:
            raise NotDirect("its JPEGTables are not a JPEG tables stream")
        shared = tables[2:-2] if tables.endswith(_EOI) else tables[2:]
    nonzero = np.flatnonzero(level.counts)
    if len(nonzero) == 0:
        raise NotDirect("has no tile data")
    with open(level.path, "rb") as f:
        f.seek(int(level.offsets[nonzero[0]]))
        stream = f.read(int(level.counts[nonzero[0]]))
    if stream[:2] != _SOI:
        raise NotDirect("has tile data that is not a JPEG stream")
    jfif, adobe = _colour_markers(_SOI + shared + stream[2:])
    if jfif or adobe:  # the stream says it; decoders read it as libtiff would
        return _SOI + shared
    return _SOI + _adobe_marker(0 if photometric == _RGB else 1) + shared
