"""Which reader reads a slide's tiles: OpenSlide, or the direct JPEG path checked against it.

The ``reader`` setting of ``crcrs extract`` (:data:`READERS`): "openslide" reads every format;
"direct" reads the compressed file tiles of a tiled JPEG pyramid level
(:mod:`feature_extraction.reading.direct`) without a check, and fails a slide it cannot read; "auto"
(the default) takes the direct path where the file qualifies and its pixels on the slide's
first :data:`N_CHECK_TILES` tissue tiles are within :data:`MIN_PSNR_DB` of OpenSlide's
(:data:`MIN_DEVICE_PSNR_DB` for the GPU decode), and says why not otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from feature_extraction.reading.direct import JpegLevel, NotDirect, open_jpeg_level
from feature_extraction.reading.direct_batch import decode_blocks
from feature_extraction.reading.loader import (
    DIRECT_CPU,
    DIRECT_DEVICE,
    OPENSLIDE,
    ReadSpec,
    Work,
    pack_work,
    read_block_direct,
    read_block_openslide,
)
from feature_extraction.reading.slides import Slide, SlideError

#: Reader choices (the ``reader`` setting of ``crcrs extract``).
READERS = ("auto", "openslide", "direct")
DEFAULT_READER = "auto"
#: ``auto`` takes the direct path on the CPU when its pixels on the first tiles reach this PSNR:
#: there it decodes with libjpeg-turbo, as OpenSlide does, and only rounding may differ.
MIN_PSNR_DB = 40.0
#: ... and the GPU decode (nvjpeg) at this PSNR, since its chroma upsampling and inverse DCT
#: need not be libjpeg's. Measured on real H&E tiles (``benchmarks/decoder_agreement.py``):
#: libjpeg-turbo's own replicated chroma upsampling and fast IDCT differ from its defaults by
#: 35-51 dB, with features at cosine >= 0.985 to the reference (bf16 autocast: >= 0.996),
#: while a tile read one pixel off differs by 16-22 dB and an RGB-coded tile decoded as YCbCr
#: by 11 dB. 40 dB would refuse the GPU decode of 4:2:0 slides for an upsampling filter.
MIN_DEVICE_PSNR_DB = 30.0
#: How many of a slide's first tissue tiles ``auto`` compares with OpenSlide.
N_CHECK_TILES = 4
#: Reason recorded for a slide the ``direct`` reader cannot read.
NOT_DIRECT = "not_direct"


def choose_reader(
    choice: str,
    slide: Slide,
    coords_level0: np.ndarray,
    size0: int,
    size: int,
    device: torch.device,
) -> tuple[ReadSpec, str | None]:
    """How to read this slide's tiles, and why the direct reader is not used (None when it is).

    Parameters
    ----------
    choice : ``"openslide"``, ``"direct"`` (wherever the level read is a tiled JPEG page, no
        check) or ``"auto"`` (the direct reader where the file qualifies and its pixels on the
        first :data:`N_CHECK_TILES` tiles are within :func:`min_psnr_db` of OpenSlide's)
    slide : the open slide
    coords_level0 : (n, 2) the tiles that will be read, in order
    size0, size : tile edge in level-0 pixels and in output pixels
    device : the encoder's device: on a GPU the direct reader decodes there

    Raises
    ------
    SlideError
        with ``choice="direct"`` when the level read is not a tiled JPEG page.
    """
    level = slide.best_level(size0 / size)
    ds = float(slide.level_downsamples[level])
    level_size = tuple(int(v) for v in slide.level_dimensions[level])
    spec = ReadSpec(OPENSLIDE, level, ds, level_size)
    if choice == OPENSLIDE:
        return spec, None
    try:
        jpeg = open_jpeg_level(slide.path, level_size)
    except NotDirect as exc:
        if choice == "direct":
            raise SlideError(
                f"{slide.path}: the direct reader cannot read it: {exc}; use reader 'auto'",
                reason=NOT_DIRECT,
            ) from None
        return spec, str(exc)
    kinds = [DIRECT_DEVICE, DIRECT_CPU] if device.type == "cuda" else [DIRECT_CPU]
    why = None
    try:
        for kind in kinds:
            direct = ReadSpec(kind, level, ds, level_size)
            if choice == "direct":
                return direct, None
            db, why = direct_psnr(slide, jpeg, direct, coords_level0, size0, size, device)
            if db >= min_psnr_db(kind):
                return direct, None
    finally:
        jpeg.close()
    return spec, why


def direct_psnr(
    slide: Slide,
    jpeg: JpegLevel,
    read: ReadSpec,
    coords_level0: np.ndarray,
    size0: int,
    size: int,
    device: torch.device,
) -> tuple[float, str]:
    """The lowest PSNR (dB) of the direct reader against OpenSlide on the first tiles, and a note.

    Tiles are read one by one both ways, with the decoder ``read.kind`` names.
    """
    worst = np.inf
    for xy in np.asarray(coords_level0[:N_CHECK_TILES]).reshape(-1, 2):
        block = xy[None].astype(np.int64)
        reference = read_block_openslide(slide, block, size0, size)[0]
        try:
            if read.kind == DIRECT_CPU:
                mine = read_block_direct(jpeg, block, size0, size, read.downsample)[0]
            else:
                work = Work(0, 0, slide.path, slide.mpp, read, (block,), size0, size)
                mine = decode_blocks(pack_work(jpeg, work), size, device)[0].cpu().numpy()
        except (OSError, ValueError, SyntaxError, RuntimeError) as exc:
            return -np.inf, f"the direct {read.kind} decode failed ({type(exc).__name__}: {exc})"
        worst = min(worst, psnr(mine, reference))
    limit = min_psnr_db(read.kind)
    note = (
        f"direct {read.kind} pixels differ from OpenSlide's (PSNR {worst:.1f} dB < {limit:.0f} dB)"
    )
    return worst, note


def min_psnr_db(kind: str) -> float:
    """The PSNR the direct reader ``kind`` must reach against OpenSlide to be used."""
    return MIN_DEVICE_PSNR_DB if kind == DIRECT_DEVICE else MIN_PSNR_DB


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
