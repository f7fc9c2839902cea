"""Benchmark: does bf16 autocast in the training steps change the C-index beyond noise?

One command::

    python benchmarks/precision_c.py                  # CPU, several simulated cohorts
    python benchmarks/precision_c.py --device cuda    # the same on a GPU

For each seed, one simulated cohort (``prevalence`` scenario by default) is fitted twice with the same settings
and the same seed, ``--precision fp32`` and ``--precision bf16`` (:class:`FitSettings`); the
out-of-fold Harrell C of the two fits is compared. The noise scale is the spread of C across
seeds (cohorts) with fp32; the effect of bf16 is the mean paired difference and its standard
error. Prediction runs in fp32 either way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._machine import append_results, gpu_name, header_lines  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    import torch

    from mil_crcrs import FitSettings, fit
    from mil_crcrs.simulate import SimulationSettings, simulate_cohort

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--scenario", default="prevalence")
    p.add_argument("--patients", type=int, default=80)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-append", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.UTC)
    rows = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory(prefix="crcrs-precision-") as tmp:
            sim = SimulationSettings(
                scenario=args.scenario, n_patients=args.patients, dim=args.dim, seed=seed
            )
            cohort = simulate_cohort(tmp, sim)
            row = {"seed": seed, "oracle_c": cohort.oracle_c}
            for precision in ("fp32", "bf16"):
                settings = FitSettings(
                    model_kwargs={"hidden_dim": 32, "attn_dim": 16, "dropout": 0.1},
                    epochs=args.epochs,
                    lr=1e-2,
                    schedule="onecycle",
                    inner_val_fraction=0.0,
                    max_tiles=32,
                    precision=precision,
                    device=args.device,
                    progress=False,
                    cache_gb=1.0,
                    seed=seed,
                )
                start = time.perf_counter()
                model = fit(cohort.features_dir, cohort.clinical_csv, settings)
                row[f"c_{precision}"] = model.metrics["harrell_c_oof"]
                row[f"s_{precision}"] = time.perf_counter() - start
        row["diff"] = row["c_bf16"] - row["c_fp32"]
        rows.append(row)
        print(row, flush=True)
    diffs = [r["diff"] for r in rows]
    mean_diff = statistics.mean(diffs)
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    spread = statistics.stdev(r["c_fp32"] for r in rows) if len(rows) > 1 else float("nan")
    lines = [
        "| seed | oracle C | C fp32 | C bf16 | bf16 - fp32 | fit s fp32 | fit s bf16 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['seed']} | {r['oracle_c']:.3f} | {r['c_fp32']:.3f} | {r['c_bf16']:.3f} | "
        f"{r['diff']:+.3f} | {r['s_fp32']:.1f} | {r['s_bf16']:.1f} |"
        for r in rows
    ]
    summary = (
        f"Mean paired difference bf16 - fp32: {mean_diff:+.4f} (standard error {se:.4f}, "
        f"{len(rows)} cohorts); spread (sd) of the fp32 C across cohorts: {spread:.4f}."
    )
    table = "\n".join(lines)
    print(table + "\n" + summary)
    if args.no_append:
        return
    section = [
        f"## bf16 autocast and the C-index on {args.device} ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        *header_lines(
            "precision_c",
            argv,
            threads=args.threads,
            device=gpu_name(args.device),
            started=started,
        ),
        f"- Each seed: a simulated `{args.scenario}` cohort of {args.patients} patients, "
        f"{args.dim}-d; abmil hidden 32 / attention 16, dropout 0.1, 5 folds, {args.epochs} "
        "epochs, one-cycle to lr 1e-2, no early stopping, max_tiles 32, otherwise FitSettings "
        "defaults; the two fits share cohort, folds and seed.",
        "",
        table,
        "",
        summary,
        "",
    ]
    append_results(HERE / "RESULTS.md", "\n".join(section))


if __name__ == "__main__":
    main()
