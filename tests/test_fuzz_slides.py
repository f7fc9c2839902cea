"""Fuzzed slides: every file is either segmented as a slide or refused in one line.

Hypothesis damages a small pyramidal TIFF of real tissue (cut at a random byte, or with random
bytes written over it at a random place) and also tries zero-byte files, a PNG renamed ``.svs``,
random bytes, a slide without resolution and a 2 MB TIFF whose header claims a
1,000,000 x 1,000,000 px image (a decompression bomb: 3 TB of pixels). The property: opening the
slide and segmenting its tissue (what ``crcrs extract`` does before encoding) either works or
raises a :class:`SlideError` with one line naming the file, within bounded memory. Examples
are derandomized.
"""

from __future__ import annotations

import resource
import struct
import tempfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("openslide")

from cli.main import cli  # noqa: E402
from feature_extraction.reading.slides import Slide, SlideError  # noqa: E402
from feature_extraction.tiling.tissue import TissueParams, tissue_mask  # noqa: E402
from tests.helpers import CELLS, TINY_RUN, tissue_image, write_pyramid  # noqa: E402

FUZZ = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@lru_cache(maxsize=1)
def good_slide_bytes() -> bytes:
    """A 1024 x 768 px zlib pyramidal TIFF of real tissue at 0.5 um/px, as bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.tiff"
        write_pyramid(path, tissue_image(CELLS, 128), 0.5, levels=2)
        return path.read_bytes()


def bomb_tiff(side: int = 1_000_000, tile: int = 4096, mpp: float = 0.25) -> bytes:
    """A valid tiled TIFF of ``side`` x ``side`` RGB pixels in a few MB: every tile entry
    points at the same deflate-compressed black tile."""
    per_side = -(-side // tile)  # ceiling
    n_tiles = per_side * per_side
    data = zlib.compress(bytes(tile * tile * 3), 9)
    offsets_at = 8 + len(data)
    counts_at = offsets_at + 4 * n_tiles
    bits_at = counts_at + 4 * n_tiles
    res_at = bits_at + 6
    ifd_at = res_at + 8
    per_cm = round(1e4 / mpp)
    entries = [  # (tag, type, count, value or offset); types: 3 SHORT, 4 LONG, 5 RATIONAL
        (256, 4, 1, side),
        (257, 4, 1, side),
        (258, 3, 3, bits_at),
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 2),  # RGB
        (277, 3, 1, 3),
        (282, 5, 1, res_at),
        (283, 5, 1, res_at),
        (284, 3, 1, 1),
        (296, 3, 1, 3),  # centimetre
        (322, 4, 1, tile),
        (323, 4, 1, tile),
        (324, 4, n_tiles, offsets_at),
        (325, 4, n_tiles, counts_at),
    ]
    out = bytearray(b"II" + struct.pack("<HI", 42, ifd_at) + data)
    out += struct.pack(f"<{n_tiles}I", *([8] * n_tiles))
    out += struct.pack(f"<{n_tiles}I", *([len(data)] * n_tiles))
    out += struct.pack("<3H", 8, 8, 8) + struct.pack("<2I", per_cm, 1)
    out += struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 and count == 1 else None
        out += struct.pack("<HHI", tag, kind, count) + (packed or struct.pack("<I", value))
    out += struct.pack("<I", 0)
    return bytes(out)


def png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(tissue_image(CELLS, 32)).save(buffer, format="PNG")
    return buffer.getvalue()


@st.composite
def slide_files(draw) -> tuple[str, bytes]:
    """(suffix, bytes) of one damaged or odd slide file."""
    kind = draw(st.sampled_from(["truncated"] * 4 + ["overwritten"] * 4 + ["odd"]))
    good = good_slide_bytes()
    if kind == "truncated":
        return ".tiff", good[: draw(st.integers(0, len(good) - 1))]
    if kind == "overwritten":
        at = draw(st.integers(0, len(good) - 1))
        noise = draw(st.binary(min_size=1, max_size=64))
        return ".tiff", good[:at] + noise + good[at + len(noise) :]
    return draw(
        st.sampled_from(
            [(".svs", b""), (".svs", png_bytes()), (".svs", b"II*\0" + bytes(100))]
            + [(".ndpi", draw(st.binary(max_size=300)))]
        )
    )


def check_slide(path: Path) -> None:
    """The property for one file: segmented, or refused in one line naming it."""
    try:
        with Slide(path) as slide:
            tissue = tissue_mask(slide, TissueParams())
            assert tissue.mask.ndim == 2
    except SlideError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1 and str(path) in message, message


@FUZZ
@given(case=slide_files())
def test_fuzzed_slides_are_segmented_or_refused_in_one_line(case):
    suffix, data = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"slide{suffix}"
        path.write_bytes(data)
        check_slide(path)


def test_a_header_claiming_a_terapixel_image_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.tiff"
    path.write_bytes(bomb_tiff())
    assert path.stat().st_size < 3_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with Slide(path) as slide:
        assert slide.dimensions == (1_000_000, 1_000_000)
        with pytest.raises(SlideError, match=r"bomb.tiff: 1000000 x 1000000 px .* more than"):
            tissue_mask(slide, TissueParams())
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 500


def test_cli_extract_lists_every_bad_slide_and_exits_2_in_one_line(tmp_path):
    """The CLI contract on a sample: every bad slide in the errors report, one error line."""
    folder = tmp_path / "slides"
    folder.mkdir()
    good = good_slide_bytes()
    (folder / "empty.svs").write_bytes(b"")
    (folder / "png.svs").write_bytes(png_bytes())
    (folder / "cut.tiff").write_bytes(good[: len(good) // 2])
    (folder / "bomb.tiff").write_bytes(bomb_tiff())
    nompp = folder / "nompp.tiff"
    write_pyramid(nompp, tissue_image(CELLS, 128), None, levels=2)
    (folder / "ok.tiff").write_bytes(good)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["extract", str(folder), "--out", str(out), *TINY_RUN])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "5 slide(s) failed" in errors[0], result.output
    report = pd.read_csv(out / "extract_errors.csv").set_index("slide_id")
    assert sorted(report.index) == ["bomb", "cut", "empty", "nompp", "png"]
    assert report.loc["nompp", "reason"] == "no_mpp"
    assert all(len(str(m).splitlines()) == 1 for m in report["message"])
    assert sorted(p.name for p in out.glob("*.h5")) == ["ok.h5"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert np.isfinite(pd.read_csv(out / "extract_errors.csv")["rank"]).all()
