"""A large simulated cohort written to disk a few patients at a time (for cohort_scale.py).

:func:`mil_crcrs.simulate.simulate_cohort` draws a whole cohort in memory; a 1,000-patient x
10k-tile x 1,024-d cohort would not fit. :func:`write_large_cohort` draws it in chunks of
``chunk`` patients with :func:`mil_crcrs.simulate.draw_cohort` (one world, so the same
"encoder" and planted phenotypes throughout; each chunk its own seed), writes each chunk's slides
as float16 feature files and frees it. Patient and slide ids get the chunk's prefix. Each chunk
calibrates its own censoring and standardises its own risk, so the cohort is a mixture of
equally drawn sub-cohorts: fine for timing, and the C-index still measures the planted signal.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mil_crcrs.metrics import harrell_c
from mil_crcrs.simulate import SimulationSettings, draw_cohort
from mil_crcrs.store import FeatureMeta, write_bag

#: Level-0 pixels per tile of the written coordinates (256 px at 0.5 um/px, 20x).
TILE_LEVEL0 = 512


def _write_chunk(out: Path, base: SimulationSettings, k: int, size: int, seed: int) -> Path:
    """Draw and write chunk ``k`` of ``size`` patients; returns its table (written last, so a
    chunk whose table exists is complete and is not drawn again)."""
    table_path = out / "chunks" / f"C{k:03d}.csv"
    if table_path.exists():
        return table_path
    draw = draw_cohort(replace(base, n_patients=size, seed=seed * 100_003 + k))
    prefix = f"C{k:03d}"
    for sid, feats in draw.features.items():
        meta = FeatureMeta(
            f"{prefix}{sid}", base.encoder, 256, TILE_LEVEL0, 0.5, 0.25, 100_000, 100_000
        )
        write_bag(out / "features" / f"{prefix}{sid}.h5", feats, draw.coords[sid], meta, "float16")
    table = draw.clinical[["patient_id", "slide_id", "time", "event"]].copy()
    table["patient_id"] = prefix + table["patient_id"]
    table["slide_id"] = prefix + table["slide_id"]
    table["true_risk"] = draw.truth["true_risk"].reindex(draw.clinical["patient_id"]).to_numpy()
    table_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = table_path.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    tmp.rename(table_path)
    return table_path


def write_large_cohort(
    out: Path, n_patients: int, tiles: int, dim: int, seed: int = 0, chunk: int = 10, jobs: int = 1
) -> dict:
    """Write ``n_patients`` one-slide patients of ``tiles`` tiles of ``dim`` features to ``out``.

    Writes ``out/features/*.h5`` (float16), ``out/clinical.csv`` and ``out/manifest.json``, in
    ``jobs`` processes; a folder whose manifest matches the request is reused as it is, and an
    interrupted run resumes at the first chunk it had not finished. Returns the manifest.
    """
    request = {"n_patients": n_patients, "tiles": tiles, "dim": dim, "seed": seed}
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("request") == request:
            return manifest
    (out / "features").mkdir(parents=True, exist_ok=True)
    base = SimulationSettings(
        scenario="rare",
        n_patients=chunk,
        tiles_per_slide=(tiles, tiles),
        slides_per_patient=(1, 1),
        dim=dim,
        world_seed=seed,
    )
    start = time.perf_counter()
    sizes = [min(chunk, n_patients - first) for first in range(0, n_patients, chunk)]
    args = [(out, base, k, size, seed) for k, size in enumerate(sizes)]
    if jobs > 1:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            paths = list(pool.map(_write_chunk, *zip(*args, strict=True)))
    else:
        paths = [_write_chunk(*a) for a in args]
    table = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    table.drop(columns="true_risk").to_csv(out / "clinical.csv", index=False)
    manifest = {
        "request": request,
        "settings": asdict(base),
        "oracle_c": harrell_c(
            table["time"].to_numpy(), table["event"].to_numpy(), table["true_risk"].to_numpy()
        ),
        "event_rate": float(np.mean(table["event"])),
        "feature_bytes": int(n_patients * tiles * dim * 2),
        "write_s": time.perf_counter() - start,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest
