"""Benchmark: the whole ``crcrs associate`` run at TCGA scale, its time and peak memory.

One command::

    python benchmarks/associate_scale.py          # 500 patients x 20,000 genes x 50 sets
    python benchmarks/associate_scale.py --patients 100 --genes 2000 --no-append

A simulated cBioPortal study (:func:`mil_crcrs.simulate.omics.simulate_omics`) of ``--patients``
patients with ``--genes`` expressed genes, ``--mutation-genes`` mutated genes, ``--sets`` gene
sets of 40 genes and 8 immune cell types is written to a temporary folder (not timed). Then
``crcrs associate`` runs on it as a user would, in a fresh process (import, reading the files,
Fisher and rank tests, differential expression, pre-ranked GSEA with ``--permutations``
permutations, the patient tables, every figure, the outputs): once with one GSEA thread and once
with two. The wall time is the subprocess's; peak memory is its maximum resident set size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks._machine import append_results, header_lines, load_average, rows_table, say  # noqa: E402


def simulate(root: Path, args: argparse.Namespace):
    """The study and its predictions.csv in ``root``."""
    import numpy as np
    import pandas as pd

    from mil_crcrs.simulate.omics import OmicsSimulationSettings, simulate_omics, simulated_scores

    rng = np.random.default_rng(0)
    ids = [f"TCGA-SM-{i:04d}" for i in range(args.patients)]
    risk = pd.Series(rng.normal(size=args.patients), index=ids)
    settings = OmicsSimulationSettings(
        n_genes=args.genes,
        n_mutation_genes=args.mutation_genes,
        n_gene_sets=args.sets,
        n_cell_types=8,
        seed=0,
    )
    sim = simulate_omics(risk, root / "study", settings)
    simulated_scores(risk).to_csv(root / "predictions.csv", index=False)
    return sim


def run_once(root: Path, sim, args: argparse.Namespace, threads: int) -> dict:
    """One ``crcrs associate`` in a child process: wall seconds and the child's peak RSS."""
    out = root / f"out-{threads}"
    cmd = [
        sys.executable, "-m", "cli.main", "associate", "--scores", str(root / "predictions.csv"),
        "--cbioportal", str(sim.folder), "--gene-sets", str(sim.gene_sets),
        "--table", str(sim.immune), "--table", str(sim.subtypes), "--out", str(out),
        "--permutations", str(args.permutations), "--threads", str(threads), "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage, its peak RSS
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0), stderr.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"associate failed: {stderr.read().strip()}")
        say("associate_scale", stdout.read().strip().replace("\n", " | "))
    peak_mib = usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
    return {"GSEA threads": threads, "wall s": seconds, "peak RSS MiB": peak_mib}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patients", type=int, default=500)
    p.add_argument("--genes", type=int, default=20000)
    p.add_argument("--mutation-genes", type=int, default=2000)
    p.add_argument("--sets", type=int, default=50)
    p.add_argument("--permutations", type=int, default=1000)
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="crcrs-assoc-scale-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        sim = simulate(root, args)
        say("associate_scale", f"simulated in {time.perf_counter() - t0:.1f} s")
        size_mb = sum(f.stat().st_size for f in sim.folder.iterdir()) / 1e6
        rows = [run_once(root, sim, args, threads) for threads in (1, 2)]
    ratio = rows[0]["wall s"] / rows[1]["wall s"]
    table = rows_table(rows)
    reading = f"- One thread / two threads wall time: {ratio:.2f}x (same run, same files)."
    print(table + "\n" + reading)
    if args.no_append:
        return
    section = [
        f"## associate at scale ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        *header_lines("associate_scale", argv, started=started),
        f"- Load average at the end: {load_average()}",
        f"- Study: {args.patients} patients x {args.genes:,} genes (RSEM-like values, so the "
        f"Mann-Whitney path), {args.mutation_genes:,} mutated genes, {args.sets} gene sets of "
        f"40 genes, {args.permutations} GSEA permutations, 8 immune cell types + 2 categorical "
        f"variables; {size_mb:.0f} MB of files. The whole `crcrs associate` command in a fresh "
        "process: Python start and imports, reading, tests, figures, outputs.",
        "",
        table,
        "",
        reading,
        "",
    ]
    append_results(HERE / "RESULTS.md", "\n".join(section))


if __name__ == "__main__":
    main()
