"""Smoke test of ``benchmarks/aggregators.py``: a tiny run end to end into ``tmp_path``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "aggregators.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_aggregators", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_tiny_run_writes_one_row_per_fit_and_a_results_section(bench, tmp_path: Path):
    out, results = tmp_path / "runs.csv", tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nearlier section\n")
    argv = [
        "--quick", "--scenarios", "rare,null", "--methods", "abmil,mean,cox", "--seeds", "0,1",
        "--patients", "24", "--folds", "2", "--epochs", "1", "--jobs", "2",
        "--out", str(out), "--results", str(results), "--work-dir", str(tmp_path / "cohorts"),
    ]  # fmt: skip
    bench.main(argv)

    runs = pd.read_csv(out, keep_default_na=False, na_values=[""])  # "null" is a scenario
    assert list(runs.columns) == [
        "scenario", "seed", "method", "n_patients", "n_events", "c_oof", "c_fold_mean",
        "c_fold_sd", "oracle_c", "train_s", "cpu_s", "peak_rss_delta_mb", "peak_rss_mb", "detail",
    ]  # fmt: skip
    # 2 scenarios x 2 seeds x 3 methods, in that order
    assert len(runs) == 12
    assert list(runs["method"][:3]) == ["abmil", "mean", "cox"]
    assert list(
        runs.drop_duplicates(["scenario", "seed"])[["scenario", "seed"]].itertuples(
            index=False, name=None
        )
    ) == [("rare", 0), ("rare", 1), ("null", 0), ("null", 1)]
    assert (runs["n_patients"] == 24).all()
    assert runs["c_oof"].between(0, 1).all()
    assert (runs["train_s"] > 0).all() and (runs["peak_rss_mb"] > 0).all()
    # Every method of one cohort is scored against the same oracle; the null oracle ties all.
    assert (runs.groupby(["scenario", "seed"])["oracle_c"].nunique() == 1).all()
    assert (runs.loc[runs["scenario"] == "null", "oracle_c"] == 0.5).all()

    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nearlier section\n")  # appended, not replaced
    assert text.count("## Aggregators benchmark, quick run") == 1
    assert "- Command: `python benchmarks/aggregators.py --quick --scenarios rare,null" in text
    assert "- Machine:" in text and "- Versions: mil-crcrs" in text
    table_rows = [line for line in text.splitlines() if line.startswith(("| rare", "| null"))]
    assert len(table_rows) == 6  # one per scenario and method


def test_cox_baseline_uses_the_folds_of_fit(bench, tmp_path: Path):
    """The Cox baseline reports the same patients and events, fold by fold, as fit does."""
    from mil_crcrs.fitting import fit

    settings = bench.replace(bench.QUICK, n_patients=30, folds=3, epochs=1)
    cohort = bench.SCENARIOS["prevalence"](tmp_path / "c", 0, settings)
    cox = bench.run_cox(cohort, settings, seed=0)
    model = fit(cohort.features_dir, cohort.clinical_csv, settings.fit_settings("mean", 0))
    assert cox["n_patients"] == model.metrics["n_patients"] == 30
    assert cox["n_events"] == model.metrics["n_events"]
    assert len(cox["detail"].split("/")) == 3  # one penalty per fold
    # A linear signal in the bag mean: the ridge Cox on mean-pooled features must find it.
    assert cox["c_oof"] > 0.6


def test_unknown_scenario_or_method_is_refused(bench):
    with pytest.raises(ValueError, match="unknown scenario"):
        bench.replace(bench.FULL, scenarios=("rare", "nope"))
    with pytest.raises(ValueError, match="unknown method"):
        bench.replace(bench.FULL, methods=("abmil", "lasso"))


def test_demo_scenario_writes_a_cohort_the_benchmark_reads(bench, tmp_path: Path):
    """The demo's slide cohort, at a tiny size: real tissue, encoded as ``crcrs demo`` does."""
    from feature_extraction.synthetic.demo import DemoSettings
    from mil_crcrs.data.bags import PatientBags
    from mil_crcrs.data.store import FeatureStore

    tiny = bench.demo_scenario(DemoSettings(n_patients=10, slide_tiles=(3, 3)))
    settings = bench.replace(bench.QUICK, folds=2)
    cohort = tiny(tmp_path / "demo", 0, settings)

    assert cohort.time_unit == "days"
    store = FeatureStore(cohort.features_dir)
    table = bench.read_cohort(cohort.clinical_csv, time_unit=cohort.time_unit)
    table.match_features(store.slide_ids, "error")  # every slide in the table has features
    assert len(table) == 10  # the demo's size, not settings.n_patients
    dim, encoder = store.check_consistent()
    info = store.info(store.slide_ids[0])
    assert (encoder, info.tile_size_px, info.target_mpp) == ("efficientnet_lite0", 112, 1.0)
    # The oracle is the C of the planted extent's log-hazard: finite and better than chance.
    assert 0.5 < cohort.oracle_c <= 1.0
    # The fits read it as they read a simulated cohort: one finite bag per patient.
    bags = PatientBags(table, store)
    assert bags[0].features.shape[1] == dim == 1280
    assert all(np.isfinite(bags[i].features).all() for i in range(len(bags)))


def test_demo_is_in_the_full_run_only(bench):
    assert "demo" in bench.FULL.scenarios
    assert "demo" not in bench.QUICK.scenarios  # building and encoding slides takes minutes
    args = bench.parse_args(["--quick", "--scenarios", "demo,null"])
    assert bench.replace(bench.QUICK, scenarios=args.scenarios).scenarios == ("demo", "null")


def test_results_section_notes_the_demo_cohort(bench):
    """The demo row is marked and explained: its size is not ``n_patients``."""
    summary = pd.DataFrame(
        {
            "scenario": ["null", "demo"], "method": ["abmil", "abmil"], "seeds": [1, 1],
            "c_mean": [0.5, 0.8], "c_sd": [float("nan")] * 2, "oracle_c": [0.5, 0.83],
            "c_fold_mean": [0.5, 0.8], "train_s": [1.0, 2.0], "cpu_s": [1.0, 2.0],
            "peak_rss_delta_mb": [10.0, 20.0], "peak_rss_mb": [500.0, 510.0],
            "time_vs_abmil": [1.0, 1.0], "cpu_vs_abmil": [1.0, 1.0],
        }
    )  # fmt: skip
    settings = bench.replace(bench.QUICK, scenarios=("null", "demo"))
    header = ["- Command: `python benchmarks/aggregators.py --quick`", "- Machine: m"]
    text = bench.results_section(summary, settings, header, "today", 60.0, ("0", "0"), True)
    assert "## Aggregators benchmark, quick run (smoke test, not a result), today" in text
    assert "\n- Command: `python benchmarks/aggregators.py --quick`\n- Machine: m\n" in text
    assert "| demo † | abmil |" in text and "| null | abmil |" in text
    assert "† demo: the cohort `crcrs demo` runs on, one per seed: 60 patients" in text
    assert "(null: simulated, 80 patients; †: see below the table)" in text
