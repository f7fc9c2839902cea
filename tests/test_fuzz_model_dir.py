"""Fuzzed model directories: a model is loaded and scores finite numbers, or is refused in one
line naming its file, whatever ``config.json``, the weights and ``metrics.json`` hold.

Hypothesis replaces one recorded value with a value of another kind (null, booleans, numbers
with NaN and inf, text, lists, mappings), truncates or replaces a weights file, and damages
``metrics.json``. Examples are derandomized.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mil_crcrs import load_model
from mil_crcrs.data.cohort import DataWarning
from mil_crcrs.errors import InputError
from mil_crcrs.model_schema import CONFIG_RULES

FUZZ = settings(
    max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
KEYS = sorted(set(CONFIG_RULES) | {"format", "format_version", "package_version", "ensemble"})
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@st.composite
def damage(draw) -> dict:
    return {
        "key": draw(st.sampled_from(KEYS)),
        "inner": draw(st.sampled_from([None, "name", "value", "method", 0])),
        "value": draw(VALUES),
        "weights": draw(st.sampled_from([None, "truncate", "bytes", "swap"])),
        "cut": draw(st.floats(0.0, 0.99)),
        "noise": draw(st.binary(max_size=32)),
        "metrics": draw(st.sampled_from([None, "{not json", "[1, 2]", "NaN"])),
    }


def _apply(model: Path, d: dict) -> None:
    config = json.loads((model / "config.json").read_text())
    target = config.get(d["key"])
    if d["inner"] is not None and isinstance(target, dict):
        target[d["inner"]] = d["value"]
    elif d["inner"] == 0 and isinstance(target, list) and target:
        target[0] = d["value"]
    else:
        config[d["key"]] = d["value"]
    (model / "config.json").write_text(json.dumps(config))
    weights = model / "fold_1.pt"
    if d["weights"] == "truncate":
        weights.write_bytes(weights.read_bytes()[: int(weights.stat().st_size * d["cut"])])
    elif d["weights"] == "bytes":
        weights.write_bytes(d["noise"])
    elif d["weights"] == "swap":
        shutil.copy(model / "fold_2.pt", weights)
    if d["metrics"] is not None:
        (model / "metrics.json").write_text(d["metrics"])


@FUZZ
@given(d=damage())
def test_fuzzed_model_directories_load_and_score_finite_or_are_refused(tiny_model, d):
    with tempfile.TemporaryDirectory() as root:
        model = Path(root) / "model"
        shutil.copytree(tiny_model / "model", model)
        _apply(model, d)
        try:
            with warnings.catch_warnings():  # warnings (a damaged metrics.json) are allowed
                warnings.simplefilter("ignore", DataWarning)
                loaded = load_model(model)
                table = loaded.predict(tiny_model / "features")
        except InputError as exc:
            message = str(exc)
            assert len(message.splitlines()) == 1 and str(model) in message, message
            return
        assert np.isfinite(table["crcrs"]).all() and set(table["risk_group"]) <= {"high", "low"}
        assert math.isfinite(loaded.cutoff)
