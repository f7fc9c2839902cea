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
