"""Benchmark: does ``associate`` find what was planted, and is its FDR honest?

One command::

    python benchmarks/associate_power.py                 # 20 seeds, 300 patients
    python benchmarks/associate_power.py --seeds 5 --no-append

For each seed, a simulated multi-omics cohort (:func:`mil_crcrs.simulate.omics.simulate_omics`,
default effects) of ``--patients`` patients with a standard-normal true risk is written as a
cBioPortal folder; the stand-in CRCRS is the standardised risk plus N(0, 0.5) noise, split at
its median (:func:`~mil_crcrs.simulate.omics.simulated_scores`). ``associate`` runs on the
folder, its gene sets and its immune table with ``--permutations`` GSEA permutations. Counted at
FDR < 0.05: the planted genes (Fisher's test), the planted gene set (GSEA), the planted cell
type (Spearman), the planted amplification (Fisher's test on the CNA calls); and the null genes,
null sets, null cell types, null categorical variables and null CNA tests called anyway.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._machine import append_results, header_lines, load_average, say  # noqa: E402

FDR = 0.05


def one_seed(seed: int, n_patients: int, permutations: int) -> dict:
    """Simulate, associate and count the calls of one seed."""
    import numpy as np
    import pandas as pd

    from mil_crcrs.omics import AssociateSettings, associate
    from mil_crcrs.simulate.omics import OmicsSimulationSettings, simulate_omics, simulated_scores

    rng = np.random.default_rng(1000 + seed)
    ids = [f"TCGA-SM-{i:04d}" for i in range(n_patients)]
    risk = pd.Series(rng.normal(size=n_patients), index=ids)
    with tempfile.TemporaryDirectory(prefix="crcrs-assoc-power-") as tmp:
        root = Path(tmp)
        sim = simulate_omics(risk, root / "study", OmicsSimulationSettings(seed=seed))
        simulated_scores(risk, seed=seed).to_csv(root / "predictions.csv", index=False)
        start = time.perf_counter()
        result = associate(
            root / "predictions.csv",
            root / "out",
            gene_sets=sim.gene_sets,
            tables=[sim.immune, sim.subtypes],
            cbioportal=sim.folder,
            settings=AssociateSettings(permutations=permutations, seed=seed),
        )
        seconds = time.perf_counter() - start
    mut = result.tables["mutations"].set_index("gene")["fdr_fisher"]
    sets = result.tables["gene_sets"].set_index("gene_set")["fdr"]
    tab = result.tables["patient_tables"].set_index("variable")["fdr"]
    cna = result.tables["cna"].set_index(["gene", "alteration"])["fdr_fisher"]
    amp = cna.index == ("PLANTED_AMP1", "amplification (2)")
    planted = [g for g in sim.planted_genes if g in mut.index]
    nulls = [g for g in sim.null_genes if g in mut.index]
    null_vars = [v for v in tab.index if v != sim.planted_cell_type]
    return {
        "seed": seed,
        "planted genes found": f"{int((mut[planted] < FDR).sum())}/{len(sim.planted_genes)}",
        "planted set found": bool(sets[sim.planted_set] < FDR),
        "planted cell type found": bool(tab[sim.planted_cell_type] < FDR),
        "planted amplification found": bool((cna[amp] < FDR).any()),
        "null genes called": f"{int((mut[nulls] < FDR).sum())}/{len(nulls)}",
        "null sets called": f"{int((sets[list(sim.null_sets)] < FDR).sum())}/{len(sim.null_sets)}",
        "null variables called": f"{int((tab[null_vars] < FDR).sum())}/{len(null_vars)}",
        "null CNA calls": f"{int((cna[~amp] < FDR).sum())}/{int((~amp).sum())}",
        "associate s": seconds,
        "_counts": (
            int((mut[planted] < FDR).sum()),
            len(sim.planted_genes),
            int((mut[nulls] < FDR).sum()),
            len(nulls),
            int((sets[list(sim.null_sets)] < FDR).sum()),
            len(sim.null_sets),
            int((tab[null_vars] < FDR).sum()),
            len(null_vars),
            int((cna[~amp] < FDR).sum()),
            int((~amp).sum()),
        ),  # fmt: skip
    }


def summary(rows: list[dict]) -> list[str]:
    """The pooled rates over seeds, against the issue's bars."""
    sums = [sum(r["_counts"][k] for r in rows) for k in range(10)]
    n = len(rows)
    genes = sums[0] / sums[1]
    found_set = sum(r["planted set found"] for r in rows) / n
    cell = sum(r["planted cell type found"] for r in rows) / n
    amp = sum(r["planted amplification found"] for r in rows) / n
    return [
        f"- Planted genes found at FDR < {FDR}: {sums[0]}/{sums[1]} = {100 * genes:.0f}% "
        f"(bar: >= 80%); planted gene set: {100 * found_set:.0f}% of {n} seeds; planted cell "
        f"type: {100 * cell:.0f}% of seeds; planted amplification: {100 * amp:.0f}% of seeds.",
        f"- Null calls at FDR < {FDR}: genes {sums[2]}/{sums[3]} = {100 * sums[2] / sums[3]:.2f}%, "
        f"gene sets {sums[4]}/{sums[5]} = {100 * sums[4] / sums[5]:.1f}%, table variables "
        f"{sums[6]}/{sums[7]} = {100 * sums[6] / sums[7]:.1f}%, CNA gene x alteration tests "
        f"{sums[8]}/{sums[9]} = {100 * sums[8] / sums[9]:.2f}% (bar: <= 5%).",
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--patients", type=int, default=300)
    p.add_argument("--permutations", type=int, default=1000)
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    rows = []
    for seed in range(args.seeds):
        rows.append(one_seed(seed, args.patients, args.permutations))
        say("associate_power", str({k: v for k, v in rows[-1].items() if k != "_counts"}))
    from benchmarks._machine import rows_table

    table = rows_table([{k: v for k, v in r.items() if k != "_counts"} for r in rows])
    lines = summary(rows)
    print(table + "\n" + "\n".join(lines))
    if args.no_append:
        return
    from mil_crcrs.simulate.omics import OmicsSimulationSettings

    section = [
        f"## associate: power and FDR on simulated multi-omics cohorts ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        *header_lines("associate_power", argv, started=started),
        f"- Load average at the end: {load_average()}",
        f"- Each seed: {args.patients} patients, {OmicsSimulationSettings()} (effects per sd "
        "of the true risk); CRCRS = standardised risk + N(0, 0.5), median split; "
        f"{args.permutations} GSEA permutations.",
        "",
        table,
        "",
        *lines,
        "",
    ]
    append_results(HERE / "RESULTS.md", "\n".join(section))


if __name__ == "__main__":
    main()
