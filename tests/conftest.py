"""Small shared fixtures: feature files and cohort tables written into ``tmp_path``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mil_crcrs import fit
from mil_crcrs.data.store import write_bag
from mil_crcrs.simulate import SimulationSettings, simulate_cohort
from tests.helpers import grid_coords, make_meta, tiny, write_cohort


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With ``CRCRS_FAILURES_AT_ONCE=1``, print a failure's traceback as soon as the test fails.

    ``benchmarks/gpu_check.sh`` sets it: its pytest step runs under a time limit on a lent GPU,
    and pytest's own summary of failures, printed at the end, is lost when the limit cuts the
    session short (as it once did, leaving four GPU failures without their tracebacks)."""
    if report.failed and os.environ.get("CRCRS_FAILURES_AT_ONCE") == "1":
        print(f"\n--- FAILED {report.nodeid} ({report.when})", file=sys.stderr)
        print(report.longreprtext, file=sys.stderr, flush=True)


@pytest.fixture
def write_features(tmp_path: Path):
    """Write one slide in our format: ``write_features("s1", n=5, dim=4) -> path``.

    Features are ``arange`` values (hand-checkable), coords a 4-wide grid with step
    ``tile_size_level0`` (512 level-0 pixels).
    """

    def write(
        slide_id: str,
        n: int = 5,
        dim: int = 4,
        folder: str = "features",
        encoder: str = "toy",
        dtype: str = "float32",
        offset: float = 0.0,
    ) -> Path:
        meta = make_meta(slide_id, encoder)
        features = offset + np.arange(n * dim, dtype=np.float32).reshape(n, dim)
        coords = grid_coords(n, meta.tile_size_level0)
        return write_bag(tmp_path / folder / f"{slide_id}.h5", features, coords, meta, dtype=dtype)

    return write


@pytest.fixture
def write_table(tmp_path: Path):
    """Write CSV text to ``tmp_path/<name>``: ``write_table("a,b\\n1,2\\n") -> path``."""

    def write(text: str, name: str = "clinical.csv") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A saved 2-fold ``mean`` model on 12 toy one-slide patients (4-d features).

    Returns the folder holding ``model/``, ``features/p<i>.h5`` and ``cohort.csv``.
    """
    from mil_crcrs import FitSettings, fit

    root = tmp_path_factory.mktemp("tiny_model")
    rng = np.random.default_rng(0)
    rows = ["patient_id,time,event"]
    for i in range(12):
        features = rng.normal(size=(5, 4)).astype(np.float32)
        write_bag(root / "features" / f"p{i}.h5", features, grid_coords(5, 512), make_meta(f"p{i}"))
        rows.append(f"p{i},{i + 1},{i % 2}")
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    settings = FitSettings(
        folds=2, epochs=1, batch_size=4, progress=False, device="cpu", model="mean"
    )
    fit(root / "features", root / "cohort.csv", settings).save(root / "model")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest (and steadiest on a busy machine) on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def fitted(cohort):
    features, clinical = cohort
    return fit(features, clinical, tiny())


# -- Harrell's C ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    settings = SimulationSettings(
        scenario="rare",
        n_patients=24,
        tiles_per_slide=(6, 12),
        slides_per_patient=(1, 2),
        dim=8,
        seed=0,
    )
    return simulate_cohort(tmp_path_factory.mktemp("sim"), settings)


# -- crcrs view -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def view_cohort(tmp_path_factory):
    """A small demo-like cohort with slides, features and a fitted model (tests/_view_cohort.py)."""
    from tests._view_cohort import build_view_cohort

    return build_view_cohort(tmp_path_factory.mktemp("view_cohort"))
