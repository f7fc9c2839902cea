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
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks._machine import say
from mil_crcrs.data.store import FeatureMeta, write_bag
from mil_crcrs.simulate import SimulationSettings, draw_cohort
from mil_crcrs.stats.metrics import harrell_c

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


def _replicate(out: Path, template: pd.Series, copies: int, seed: int) -> pd.DataFrame:
    """``copies`` more patients from one template: its tiles in a new order, and an outcome
    drawn afresh from its true log-hazard (exponential, median 1826 days at risk 0, about 30%
    censored). Returns their table rows (the template's own row first)."""
    from mil_crcrs.data.store import read_bag

    bag = read_bag(out / "features" / f"{template['slide_id']}.h5")
    rng = np.random.default_rng([seed, zlib.crc32(template["slide_id"].encode()), copies])
    base_rate = np.log(2) / 1826.0
    rate = base_rate * np.exp(template["true_risk"])
    rows = [template.to_dict()]
    for j in range(1, copies + 1):
        sid = f"{template['slide_id']}R{j:02d}"
        perm = rng.permutation(bag.features.shape[0])
        meta = FeatureMeta(sid, bag.info.encoder, 256, TILE_LEVEL0, 0.5, 0.25, 10**5, 10**5)
        write_bag(out / "features" / f"{sid}.h5", bag.features[perm], bag.coords[perm], meta)
        event_t, censor_t = rng.exponential(1 / rate), rng.exponential(1 / (0.43 * base_rate))
        rows.append(
            {
                "patient_id": f"{template['patient_id']}R{j:02d}",
                "slide_id": sid,
                "time": max(1.0, round(min(event_t, censor_t))),
                "event": int(event_t <= censor_t),
                "true_risk": template["true_risk"],
            }
        )
    return pd.DataFrame(rows)


def write_large_cohort(
    out: Path,
    n_patients: int,
    tiles: int,
    dim: int,
    seed: int = 0,
    chunk: int = 10,
    jobs: int = 1,
    templates: int | None = None,
) -> dict:
    """Write ``n_patients`` one-slide patients of ``tiles`` tiles of ``dim`` features to ``out``.

    Writes ``out/features/*.h5`` (float16), ``out/clinical.csv`` and ``out/manifest.json``, in
    ``jobs`` processes; a folder whose manifest matches the request is reused as it is, and an
    interrupted run resumes at the first chunk it had not finished. Returns the manifest.

    With ``templates``, only that many patients are drawn by the simulator and the cohort is
    filled with copies of them (:func:`_replicate`), which is much faster to write: a cohort
    of ``templates`` distinct phenotypes, each copy with its own tile order and outcome.
    """
    request = {"n_patients": n_patients, "tiles": tiles, "dim": dim, "seed": seed}
    if templates:
        request["templates"] = templates
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
    n_drawn = min(templates or n_patients, n_patients)
    chunk = min(chunk, -(-n_drawn // max(1, jobs)))  # every process gets work
    sizes = [min(chunk, n_drawn - first) for first in range(0, n_drawn, chunk)]
    args = [(out, base, k, size, seed) for k, size in enumerate(sizes)]
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max(1, jobs), mp_context=ctx) as pool:
        paths = list(pool.map(_write_chunk, *zip(*args, strict=True)))
        table = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
        say("cohort_scale", f"{n_drawn} patients drawn in {time.perf_counter() - start:.0f} s")
        if n_drawn < n_patients:
            extra = np.full(n_drawn, (n_patients - n_drawn) // n_drawn)
            extra[: (n_patients - n_drawn) % n_drawn] += 1
            parts = pool.map(
                _replicate,
                [out] * n_drawn,
                [row for _, row in table.iterrows()],
                extra.tolist(),
                [seed] * n_drawn,
            )
            table = pd.concat(list(parts), ignore_index=True)
            say("cohort_scale", f"copies written: {time.perf_counter() - start:.0f} s in all")
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
