"""Unit checks of ``benchmarks/recipe.py``'s pieces (the study itself is a benchmark)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recipe.py"


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("bench_recipe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_drop_rates_match_the_hypergeometric_formula(recipe):
    drops = recipe.drop_rates((600, 4000), cap=512, draws=3000)
    # simulated against exact: within a few binomial standard errors (sd <= 0.009 here)
    assert (drops["p_miss_random"] - drops["p_miss_random_exact"]).abs().max() < 0.03
    assert drops["p_miss_random_exact"].iloc[1] == pytest.approx((1 - 512 / 4000) ** 6, abs=0.01)
    # blocks of adjacent tiles cover the cluster less often than as many random tiles
    assert (drops["p_miss_blocks"] > drops["p_miss_random"]).all()
    # a cap above the bag's size keeps every tile
    whole = recipe.drop_rates((1000,), cap=2048, draws=10)
    assert whole["p_miss_random"].item() == 0 and whole["p_miss_random_exact"].item() == 0


def test_candidates_merge_model_kwargs_and_score_mean_plus_worst(recipe):
    base = {"lr": 1e-3, "model_kwargs": {"hidden_dim": 64}}
    got = recipe.merged(base, {"model_kwargs": {"dropout": 0.1}})
    assert got == {"lr": 1e-3, "model_kwargs": {"hidden_dim": 64, "dropout": 0.1}}
    assert base["model_kwargs"] == {"hidden_dim": 64}  # not changed in place
    rows = pd.DataFrame(
        {
            "candidate": ["a", "a", "b", "b"],
            "c_oof": [0.7, 0.7, 0.8, 0.5],
            "oracle_c": [0.9, 0.7, 0.9, 0.7],
        }
    )
    # a: shares 0.5 and 1.0 -> 0.75 + 0.5; b: 0.75 and 0.0 -> 0.375 + 0.0
    assert recipe.score(rows).to_dict() == pytest.approx({"a": 1.25, "b": 0.375})
