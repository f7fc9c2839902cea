"""Smoke test of ``benchmarks/aggregators.py``: a tiny run end to end into ``tmp_path``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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
