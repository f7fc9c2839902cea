"""Recipe study: which training settings should ``crcrs fit`` use by default?

One command::

    python benchmarks/recipe.py --quick    # smoke run, minutes on 2 CPU cores, not a result
    python benchmarks/recipe.py            # the study RESULTS.md reports
    python benchmarks/recipe.py --stages report   # only the held-out report of the defaults

Design (what makes it affordable on 2 shared CPU cores, and honest):

- **Selection** is a staged, coordinate-wise search (:data:`STAGES`): each stage tries changes
  of one group of settings (learning rate and schedule with the early-stopping rule; epochs,
  batch size and width; standardisation, dropout and weight decay) to the best candidate so
  far, and keeps the best. A candidate is scored by the out-of-fold C of :func:`mil_crcrs.fitting.fit`'s
  own K-fold cross-validation on **development** cohorts (:data:`DEV`, simulated with seed
  :data:`DEV_SEED`; the 1,024-d uneven-scale cohort joins for the standardisation stage). Its
  score is the mean over those cohorts of the share of the oracle's margin over chance it
  reaches, ``(C - 0.5) / (oracle - 0.5)``, plus the worst of them (best on average and never
  bad).
- **Report**: the chosen settings (the library's :class:`~mil_crcrs.train.settings.FitSettings`
  defaults once they are set from the selection), the old defaults, mean pooling and a ridge Cox
  on mean features (:func:`benchmarks.aggregators.run_cox`) are then scored on **fresh**
  cohorts (seeds from 0), which no selection step has seen. This is the outer loop of a nested
  cross-validation with fresh draws of the same simulator in place of outer folds: nothing is
  ever chosen on a reported patient.
- :func:`drop_rates` measures how often a random subset of ``max_tiles`` tiles keeps none of a
  6-tile cluster in bags of thousands of tiles (random tiles, and blocks of adjacent tiles).

Outputs: a CSV of every fit (``benchmarks/recipe.csv``) and a markdown section appended to
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout, without installing
    sys.path.insert(0, str(ROOT))

from benchmarks._machine import append_results, header_lines  # noqa: E402
from benchmarks.aggregators import (  # noqa: E402
    DEMO,
    BenchSettings,
    ScenarioCohort,
    _warm_up,
    demo_scenario,
    run_cox,
    versions,
)
from mil_crcrs.atomic import write_csv, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
DEV_SEED = 100

#: ``crcrs fit``'s defaults before this study (commit 1f2f5f9), as FitSettings keyword arguments.
OLD_DEFAULTS: dict[str, Any] = dict(
    standardize=False,
    monitor="c",
    min_epochs=1,
    smooth_epochs=1,
    average_epochs=1,
    epochs=50,
    batch_size=16,
    lr=2e-4,
    weight_decay=1e-4,
    schedule="cosine",
    max_tiles=None,
    inner_val_fraction=0.2,
    patience=10,
    model_kwargs={},
)


@dataclass(frozen=True)
class CohortSpec:
    """A cohort of the study: a simulator scenario at a size, or ``"demo"`` (real tissue)."""

    name: str
    scenario: str
    n_patients: int = 300
    dim: int = 64
    tiles: tuple[int, int] = (40, 120)
    scale_range: float = 1.0
    offset_sd: float = 0.0

    def write(self, out_dir: Path, seed: int, jobs: int) -> ScenarioCohort:
        if self.scenario == "demo":
            bench = BenchSettings(scenarios=("demo",), jobs=jobs, threads=1)
            return demo_scenario(DEMO)(out_dir, seed, bench)
        from mil_crcrs.simulate import SimulationSettings, simulate_cohort

        sim = simulate_cohort(
            out_dir,
            SimulationSettings(
                scenario=self.scenario,
                n_patients=self.n_patients,
                tiles_per_slide=self.tiles,
                dim=self.dim,
                scale_range=self.scale_range,
                offset_sd=self.offset_sd,
                seed=seed,
            ),
        )
        return ScenarioCohort(sim.features_dir, sim.clinical_csv, sim.oracle_c, "days")


def sim(scenario: str, **kw: Any) -> CohortSpec:
    n, dim = kw.get("n_patients", 300), kw.get("dim", 64)
    extra = "-uneven" if kw.get("scale_range", 1.0) > 1 else ""
    return CohortSpec(f"{scenario}-{n}p-{dim}d{extra}", scenario, **kw)


DEMO_COHORT = CohortSpec("demo", "demo")
#: Where candidates are selected (seeds from DEV_SEED). Prevalence and the demo are left out of
#: the selection to fit the CPU budget (every setting that learns anything learns prevalence;
#: building and encoding a demo cohort takes minutes); both are in the report.
DEV = (
    sim("rare"),
    sim("cluster", tiles=(60, 200)),
)
#: Where the chosen defaults are reported (fresh seeds); the issue's acceptance is at 300.
REPORT = (
    sim("rare"),
    sim("both"),
    sim("cluster", tiles=(60, 200)),
    sim("prevalence"),
    sim("null"),
    DEMO_COHORT,
)
#: 1,024-d features with uneven scales and offsets: added to the development cohorts of the
#: stage that tries standardisation.
UNEVEN = sim("rare", dim=1024, tiles=(10, 40), scale_range=100.0, offset_sd=3.0)
#: Breadth: other sizes, dims and bag lengths (chosen defaults against the old ones). Left out
#: for the CPU budget: 800 patients, and 120 patients with 800-2,000 tiles per slide.
BREADTH = (
    sim("rare", n_patients=120),
    sim("both", dim=384, tiles=(20, 60)),
    UNEVEN,
)

#: Stages of the coordinate-wise search: name -> candidate changes to the best so far.
STAGES: dict[str, list[dict[str, Any]]] = {
    "lr-schedule-stopping": [
        dict(lr=1e-2, schedule="onecycle", epochs=40),
        dict(lr=1e-2, schedule="onecycle", epochs=40, inner_val_fraction=0.0),
        dict(
            lr=1e-2,
            schedule="onecycle",
            epochs=40,
            monitor="loss",
            smooth_epochs=5,
            min_epochs=20,
            average_epochs=5,
        ),
        dict(lr=3e-3, schedule="onecycle", epochs=40, inner_val_fraction=0.0),
    ],
    "epochs-batch-width": [
        dict(epochs=80),
        dict(batch_size=32),
        dict(model_kwargs={"hidden_dim": 64, "attn_dim": 32}),
    ],
    "standardise-dropout-decay": [
        dict(standardize=True),
        dict(model_kwargs={"dropout": 0.1}),
        dict(weight_decay=1e-2),
    ],
}
STAGE_EXTRA: dict[str, tuple[CohortSpec, ...]] = {"standardise-dropout-decay": (UNEVEN,)}


def settings_of(kwargs: dict[str, Any], seed: int, folds: int) -> Any:
    from mil_crcrs.train.settings import FitSettings

    return FitSettings(**kwargs, folds=folds, seed=seed, device="cpu", progress=False)


def _fit_job(args: tuple) -> dict[str, Any]:
    """One cross-validated fit in a worker process: OOF C, fold C, CPU and wall seconds."""
    import torch

    from mil_crcrs.fitting import fit

    label, kwargs, cohort, seed, folds, method = args
    torch.set_num_threads(1)
    start, cpu = time.perf_counter(), time.process_time()
    if method == "cox":
        result = run_cox(cohort, BenchSettings(folds=folds), seed)
        c_oof, c_fold = result["c_oof"], result["c_fold_mean"]
    else:
        model = fit(
            cohort.features_dir,
            cohort.clinical_csv,
            settings_of(kwargs, seed, folds),
            time_unit=cohort.time_unit,
        )
        c_oof, c_fold = model.metrics["harrell_c_oof"], model.metrics["harrell_c_mean"]
    return {
        "candidate": label,
        "c_oof": c_oof,
        "c_fold_mean": c_fold,
        "oracle_c": cohort.oracle_c,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - start,
    }


def run_jobs(
    jobs: list[tuple], cohort_names: list[str], n_jobs: int, log, partial: Path | None = None
) -> pd.DataFrame:
    """Run ``jobs`` (see :func:`_fit_job`) ``n_jobs`` at a time, in the order given; each row
    is logged as it completes and, with ``partial``, every finished row is written there at
    once (an interrupted run keeps what it measured)."""
    _warm_up()
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    rows = []
    with ProcessPoolExecutor(n_jobs, mp_context=ctx) as pool:
        futures = {
            pool.submit(_fit_job, job): name for job, name in zip(jobs, cohort_names, strict=True)
        }
        for future in as_completed(futures):
            row = {**future.result(), "cohort": futures[future]}
            rows.append(row)
            log(
                f"  {row['candidate']} on {row['cohort']}: C {row['c_oof']:.3f} "
                f"(oracle {row['oracle_c']:.3f}) cpu {row['cpu_s']:.0f} s"
            )
            if partial is not None:
                write_csv(partial, pd.DataFrame(rows))
    return pd.DataFrame(rows)


def margin(c: float, oracle: float) -> float:
    """Share of the oracle's margin over chance: ``(c - 0.5) / (oracle - 0.5)``."""
    return (c - 0.5) / (oracle - 0.5) if oracle > 0.5 else float("nan")


def score(rows: pd.DataFrame) -> pd.Series:
    """Per candidate: mean plus worst share of the oracle margin over the cohorts."""
    share = rows.apply(lambda r: margin(r.c_oof, r.oracle_c), axis=1)
    by = share.groupby(rows["candidate"], sort=False)
    return by.mean() + by.min()


def label_of(kwargs: dict[str, Any]) -> str:
    """The settings that differ from :data:`OLD_DEFAULTS`, as ``key=value`` words."""
    return " ".join(f"{k}={v}" for k, v in sorted(kwargs.items()) if v != OLD_DEFAULTS.get(k))


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` applied; ``model_kwargs`` are merged key by key."""
    out = {**base, **change}
    out["model_kwargs"] = {**base.get("model_kwargs", {}), **change.get("model_kwargs", {})}
    return out


class Cohorts:
    """Writes each (cohort, seed) once into ``work_dir`` and remembers it."""

    def __init__(self, work_dir: Path, jobs: int, log) -> None:
        self.work_dir, self.jobs, self.log, self.done = work_dir, jobs, log, {}

    def get(self, spec: CohortSpec, seed: int) -> ScenarioCohort:
        key = (spec.name, seed)
        marker = self.work_dir / f"{spec.name}-s{seed}" / "recipe-cohort.json"
        if key not in self.done and marker.exists():  # written by an earlier run
            saved = json.loads(marker.read_text())
            saved["features_dir"] = Path(saved["features_dir"])
            saved["clinical_csv"] = Path(saved["clinical_csv"])
            saved["oracle_c"] = float(saved["oracle_c"])
            self.done[key] = ScenarioCohort(**saved)
        if key not in self.done:
            start = time.perf_counter()
            self.done[key] = spec.write(marker.parent, seed, self.jobs)
            write_json(marker, {k: str(v) for k, v in asdict(self.done[key]).items()})
            self.log(
                f"cohort {spec.name} seed {seed}: oracle C {self.done[key].oracle_c:.3f} "
                f"({time.perf_counter() - start:.0f} s)"
            )
        return self.done[key]


def _earlier_fits(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(candidate, cohort) -> row of a search CSV an earlier, interrupted run wrote."""
    if not path.exists():
        return {}
    rows = pd.read_csv(path, keep_default_na=False, na_values=[""])
    keep = ["candidate", "c_oof", "c_fold_mean", "oracle_c", "cpu_s", "wall_s", "cohort"]
    return {(r["candidate"], r["cohort"]): r for r in rows[keep].to_dict("records")}


def search(
    start: dict[str, Any], stages: dict, cohorts: Cohorts, dev: Sequence[CohortSpec], args
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The coordinate-wise search over ``stages`` on the development cohorts."""
    best, all_rows = start, []
    done = _earlier_fits(args.out.with_suffix(".search.csv"))
    for i, (stage, changes) in enumerate(stages.items()):
        # after the first stage the incumbent competes too (its fits are reused where they
        # exist); the start (the old defaults) is scored in the report, not here
        candidates = {label_of(merged(best, c)) or "old defaults": merged(best, c) for c in changes}
        if i:
            candidates.setdefault(label_of(best), best)
        cohorts.log(f"stage {stage}: {len(candidates)} candidates x {len(dev)} cohorts")
        jobs, names, reused = [], [], []
        for spec in (*dev, *STAGE_EXTRA.get(stage, ())):
            cohort = cohorts.get(spec, DEV_SEED)
            for label, kwargs in candidates.items():
                if (label, spec.name) in done:
                    reused.append(done[label, spec.name])
                    continue
                jobs.append((label, kwargs, cohort, DEV_SEED, args.dev_folds, "abmil"))
                names.append(spec.name)
        rows = run_jobs(jobs, names, args.jobs, cohorts.log)
        rows = pd.concat([rows, pd.DataFrame(reused)], ignore_index=True)
        done |= {(r["candidate"], r["cohort"]): r for r in rows.to_dict("records")}
        rows["stage"] = stage
        scores = score(rows)
        rows["score"] = rows["candidate"].map(scores)
        best = candidates[scores.idxmax()]
        cohorts.log(f"stage {stage}: best {scores.idxmax()!r} (score {scores.max():.3f})")
        all_rows.append(rows)
        # every stage's fits on disk at once: a later failure loses nothing measured
        write_csv(args.out.with_suffix(".search.csv"), pd.concat(all_rows, ignore_index=True))
    return best, pd.concat(all_rows, ignore_index=True)


def report(
    chosen: dict[str, Any], cohorts: Cohorts, specs: Sequence[CohortSpec], methods, seed, args
) -> pd.DataFrame:
    """The chosen settings, the old defaults and baselines on fresh cohorts (seed ``seed``)."""
    runs = {
        "abmil (new defaults)": (chosen, "abmil"),
        "abmil (old defaults)": (OLD_DEFAULTS, "abmil"),
        "mean (new defaults)": ({**chosen, "model": "mean", "model_kwargs": {}}, "mean"),
        "cox on mean features": ({}, "cox"),
    }
    jobs, names = [], []
    for label in methods:  # method by method: the new defaults first
        for spec in specs:
            cohort = cohorts.get(spec, seed)
            if label not in REPORT_ON.get(spec.scenario, methods):
                continue
            kwargs, method = runs[label]
            if spec.scenario == "demo":  # as `crcrs demo` fits it: the demo's own epochs
                kwargs = {**kwargs, "epochs": DEMO.epochs}
            jobs.append((label, kwargs, cohort, seed, args.folds, method))
            names.append(spec.name)
    partial = args.out.with_suffix(f".report-s{seed}.csv")
    return run_jobs(jobs, names, args.jobs, cohorts.log, partial)


#: Which methods the report runs on a scenario (all where not listed): the acceptance needs
#: mean pooling only on prevalence and rare; the ridge Cox on the demo's 1,280 features took
#: 200 CPU seconds in the aggregators benchmark and is left out.
REPORT_ON: dict[str, tuple[str, ...]] = {
    "both": ("abmil (new defaults)", "cox on mean features"),
    "prevalence": ("abmil (new defaults)", "cox on mean features", "mean (new defaults)"),
    "cluster": ("abmil (new defaults)", "abmil (old defaults)", "cox on mean features"),
    "null": ("abmil (new defaults)", "cox on mean features"),
    "demo": ("abmil (new defaults)", "abmil (old defaults)"),
}


def drop_rates(
    bag_sizes: Sequence[int], cap: int = 512, cluster: int = 6, draws: int = 4000, seed: int = 0
) -> pd.DataFrame:
    """How often a training subset of ``cap`` tiles holds none of a ``cluster``-tile cluster.

    Random: ``cap`` tiles uniformly without replacement (what :func:`mil_crcrs.data.bags.collate`
    does), by simulation and by the hypergeometric formula. Blocks: ``cap / 16`` random 4x4
    blocks of adjacent tiles on a square grid (a neighbourhood-preserving sampler).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for n in bag_sizes:
        side = int(math.ceil(math.sqrt(n)))
        exact = math.comb(n - cluster, cap) / math.comb(n, cap) if n > cap else 0.0
        random_miss = (
            np.mean([not np.any(rng.choice(n, cap, replace=False) < cluster) for _ in range(draws)])
            if n > cap
            else 0.0  # the cap keeps the whole bag
        )
        # the cluster: a 2x3 patch at a random place; blocks: 4x4 patches at random corners
        block_miss = []
        for _ in range(draws):
            cx, cy = rng.integers(0, side - 3), rng.integers(0, side - 2)
            corners = rng.integers(0, side - 3, size=(cap // 16, 2))
            hit = (corners[:, 0] > cx - 4) & (corners[:, 0] <= cx + 2)
            hit &= (corners[:, 1] > cy - 4) & (corners[:, 1] <= cy + 1)
            block_miss.append(not hit.any())
        rows.append(
            {
                "bag_tiles": n,
                "cap": cap,
                "p_miss_random": float(random_miss),
                "p_miss_random_exact": exact,
                "p_miss_blocks": float(np.mean(block_miss)),
            }
        )
    return pd.DataFrame(rows)


def summary_table(rows: pd.DataFrame) -> str:
    """Markdown: one row per (cohort, candidate) with C, oracle, margin share and CPU time."""
    lines = [
        "| cohort | settings | C (OOF) | oracle C | share of oracle margin | CPU s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows.itertuples(index=False):
        lines.append(
            f"| {r.cohort} | {r.candidate} | {r.c_oof:.3f} | {r.oracle_c:.3f} | "
            f"{margin(r.c_oof, r.oracle_c):.2f} | {r.cpu_s:.0f} |"
        )
    return "\n".join(lines)


def drop_table(drops: pd.DataFrame) -> str:
    lines = [
        "| tiles in bag | cap | P(no cluster tile), random | exact | P(no cluster tile), 4x4 blocks |",
        "|---|---|---|---|---|",
    ]
    for r in drops.itertuples(index=False):
        lines.append(
            f"| {r.bag_tiles} | {r.cap} | {r.p_miss_random:.3f} | {r.p_miss_random_exact:.3f} "
            f"| {r.p_miss_blocks:.3f} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    """What a run does (``--quick`` shrinks it)."""

    dev: tuple[CohortSpec, ...] = DEV
    report: tuple[CohortSpec, ...] = REPORT
    breadth: tuple[CohortSpec, ...] = BREADTH
    report_seed: int = 0


QUICK = Plan(
    dev=(replace(sim("rare"), n_patients=80, name="rare-80p-64d"),),
    report=(replace(sim("cluster"), n_patients=80, name="cluster-80p-64d"),),
    breadth=(),
)
REPORT_METHODS = (
    "abmil (new defaults)",
    "cox on mean features",
    "abmil (old defaults)",
    "mean (new defaults)",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Recipe study for crcrs fit's default settings.")
    p.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    p.add_argument(
        "--stages",
        default="search,report,breadth,drops",
        help="comma-separated: cohorts (only write the report's cohorts), search (select on "
        "development cohorts), report (defaults on "
        "fresh cohorts), breadth (other sizes and dims), drops (tile-cap drop rates)",
    )
    p.add_argument("--jobs", type=int, default=2, help="fits at once")
    p.add_argument("--only", help="comma-separated cohort names: run only these (e.g. demo)")
    p.add_argument("--folds", type=int, default=5, help="folds of the reported fits")
    p.add_argument("--dev-folds", type=int, default=3, help="folds of the selection fits")
    p.add_argument("--out", type=Path, default=HERE / "recipe.csv")
    p.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    p.add_argument("--work-dir", type=Path, help="keep the cohorts here (default: temp dir)")
    return p.parse_args(argv)


def run(args: argparse.Namespace, work_dir: Path, log) -> tuple[list[str], pd.DataFrame]:
    from mil_crcrs.train.settings import FitSettings

    plan, stages = (QUICK if args.quick else Plan()), args.stages.split(",")
    if args.only:
        keep = set(args.only.split(","))
        plan = replace(
            plan,
            dev=tuple(c for c in plan.dev if c.name in keep),
            report=tuple(c for c in plan.report if c.name in keep),
            breadth=tuple(c for c in plan.breadth if c.name in keep),
        )
    cohorts = Cohorts(work_dir, args.jobs, log)
    defaults = {f.name: getattr(FitSettings(), f.name) for f in fields(FitSettings)}
    defaults = {k: v for k, v in defaults.items() if k in OLD_DEFAULTS}
    sections, frames = [], []
    if "cohorts" in stages:  # write the report's cohorts ahead (e.g. while a search runs)
        for spec in (*plan.report, *plan.breadth):
            if spec.scenario != "demo":  # the report builds it (or finds it, see Cohorts)
                cohorts.get(spec, plan.report_seed)
    if "search" in stages:
        start = OLD_DEFAULTS
        search_stages = STAGES if not args.quick else {"lr": STAGES["lr-schedule-stopping"][:3]}
        chosen, rows = search(start, search_stages, cohorts, plan.dev, args)
        frames.append(rows.assign(part="search"))
        sections += [
            f"Selection (development cohorts, seed {DEV_SEED}, {args.dev_folds}-fold OOF C; "
            "score = mean + worst share of the oracle margin). Selected: "
            f"`{label_of(chosen) or 'the old defaults'}`.",
            "",
            summary_table(rows),
            "",
        ]
    if "report" in stages:
        rows = report(defaults, cohorts, plan.report, REPORT_METHODS, plan.report_seed, args)
        frames.append(rows.assign(part="report"))
        sections += [
            f"Report (fresh cohorts, seed {plan.report_seed}, {args.folds}-fold OOF C). New "
            f"defaults: `{label_of(defaults) or 'the old defaults'}` (all else as before).",
            "",
            summary_table(rows),
            "",
        ]
    if "breadth" in stages and plan.breadth:
        methods = (REPORT_METHODS[0], REPORT_METHODS[3])
        rows = report(defaults, cohorts, plan.breadth, methods, plan.report_seed, args)
        frames.append(rows.assign(part="breadth"))
        sections += ["Breadth (fresh cohorts, other sizes):", "", summary_table(rows), ""]
    if "drops" in stages:
        drops = pd.concat(
            [drop_rates((1000, 2000, 4000, 8000), cap=cap) for cap in (512, 2048, 4096)]
        )
        sections += [
            "How often a training subset of `cap` tiles keeps none of a 6-tile cluster:",
            "",
            drop_table(drops),
            "",
        ]
    return sections, pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = datetime.now(UTC)
    header = header_lines("recipe", argv, extra_versions=versions(), started=started)
    start = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{(time.perf_counter() - start) / 60:5.1f} min] {line}", flush=True)

    log("\n".join(header))
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        sections, rows = run(args, args.work_dir, log)
    else:
        with tempfile.TemporaryDirectory(prefix="crcrs-recipe-") as tmp:
            sections, rows = run(args, Path(tmp), log)
    if len(rows):
        write_csv(args.out, rows)
    kind = "quick run (smoke test, not a result)" if args.quick else "run"
    section = "\n".join(
        [
            f"## Recipe study, {kind}, {started:%Y-%m-%d %H:%M} UTC",
            "",
            *header,
            f"- Wall time: {(time.perf_counter() - start) / 60:.1f} min",
            "",
            *sections,
        ]
    )
    append_results(args.results, section)
    print(section)


if __name__ == "__main__":
    main()
