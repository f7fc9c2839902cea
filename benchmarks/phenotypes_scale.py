"""Benchmark: the whole ``crcrs phenotypes`` run, without slides, on a large cohort.

One command::

    nice -n 10 python benchmarks/phenotypes_scale.py --patients 300 --tiles 5000 --dim 1024

A simulated cohort of one-slide patients (float16 feature files, written once into ``--data``
by :func:`benchmarks._scale_data.write_large_cohort`, ``--templates`` distinct patients and
copies of them) is analysed by :func:`mil_crcrs.phenotypes.run.phenotype_atlas` with an
untrained abmil ensemble of ``--folds`` models (default sizes: the scores cost what a trained
model's cost). The table gives the wall and CPU time of the analysis (sample, fit, assign and
score every tile, statistics) and of writing the folder (tiles.csv.gz, UMAP of 5,000 tiles,
figures), and the peak resident memory of the process (``ru_maxrss``). Aim: under 5 minutes and
4 GB for 300 x 5,000 x 1,024 on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._machine import append_results, header_lines, say  # noqa: E402

COLUMNS = ["patients", "tiles", "dim", "k", "analyse_s", "analyse_cpu_s", "write_s", "total_s",
           "peak_rss_gb"]  # fmt: skip


def untrained_model(dim: int, folds: int, encoder: str | None):
    """An abmil ensemble of ``folds`` untrained models (default sizes), seeded."""
    import torch

    from mil_crcrs.ensemble import CRCRSModel
    from mil_crcrs.models import create_model
    from mil_crcrs.train.cutoff import Cutoff

    torch.manual_seed(0)
    models = [create_model("abmil", in_dim=dim) for _ in range(folds)]
    return CRCRSModel(
        models, [0.0] * folds, Cutoff(0.0, "median"), feature_dim=dim, encoder=encoder
    )


def measure(data: Path, folds: int) -> dict:
    from mil_crcrs.atomic import atomic_dir
    from mil_crcrs.data.store import FeatureStore
    from mil_crcrs.phenotypes.outputs import write_atlas
    from mil_crcrs.phenotypes.run import analyse_phenotypes, record
    from mil_crcrs.phenotypes.settings import PhenotypeSettings

    store = FeatureStore(data / "features")
    info = store.info(store.slide_ids[0])
    model = untrained_model(info.feature_dim, folds, info.encoder)
    settings = PhenotypeSettings(device="cpu")
    start, cpu = time.perf_counter(), time.process_time()
    atlas = analyse_phenotypes(model, store, data / "clinical.csv", settings)
    analyse_s, analyse_cpu = time.perf_counter() - start, time.process_time() - cpu
    say("phenotypes_scale", f"analysed in {analyse_s:.0f} s; writing")
    with tempfile.TemporaryDirectory() as tmp, atomic_dir(Path(tmp) / "atlas") as out:
        write_atlas(atlas, out, settings, record(atlas, settings, data, None))
    total = time.perf_counter() - start
    return {
        "patients": len(atlas.tiles.patient_ids),
        "tiles": atlas.tiles.n_tiles,
        "dim": info.feature_dim,
        "k": atlas.phenotypes.k,
        "analyse_s": analyse_s,
        "analyse_cpu_s": analyse_cpu,
        "write_s": total - analyse_s,
        "total_s": total,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--tiles", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--templates", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "ph_scale")
    parser.add_argument("--note", default="")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from benchmarks._scale_data import write_large_cohort

    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.UTC)
    say("phenotypes_scale", f"cohort in {args.data}")
    write_large_cohort(
        args.data, args.patients, args.tiles, args.dim, templates=args.templates, jobs=1
    )
    row = measure(args.data, args.folds)
    cells = [f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS]
    table = "\n".join(
        ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS), "| " + " | ".join(cells) + " |"]
    )  # fmt: skip
    print(table)
    if args.no_append:
        return
    section = [
        f"## Phenotypes at scale, without slides ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        *header_lines("phenotypes_scale", argv, threads=args.threads, started=started),
        f"- {args.folds} untrained abmil models (default sizes); k chosen by silhouette over "
        "3..8 on a 200-tile-per-slide sample; UMAP of 5,000 tiles; peak RSS of the process."
        + (f" {args.note}" if args.note else ""),
        "",
        table,
        "",
    ]
    append_results(HERE / "RESULTS.md", "\n".join(section))


if __name__ == "__main__":
    main()
