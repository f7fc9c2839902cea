"""File names made from ids are unique, plain and short, whatever the ids hold.

``heatmap`` used to give ids that differ only in non-ASCII characters one file name (their
maps and galleries overwrote each other while ``heatmaps.csv`` listed every image), and ids over
255 characters crashed it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from mil_crcrs.atomic import safe_name
from tests.helpers import run

IDS = [
    "p1",
    "é1",
    "è1",
    "e1",
    "a b",
    "a_b",
    "a/b",
    "..",
    ".hidden",
    "x" * 300,
    "x" * 301,
    "ü" * 200,
]


def test_safe_names_are_distinct_plain_and_within_the_length_limit():
    names = [safe_name(i) for i in IDS]
    assert len(set(names)) == len(IDS)
    for name in names:
        assert len(name.encode()) <= 100 and name not in (".", "..") and not name.startswith(".")
        assert "/" not in name and name.isascii()
    assert safe_name("TCGA-AA-3514") == "TCGA-AA-3514"  # plain ids are kept as they are
    assert safe_name("é1") == safe_name("é1")  # and the mapping is stable


def test_heatmaps_of_look_alike_and_very_long_ids_never_share_a_file(tmp_path, tiny_model):
    work = tmp_path / "work"
    shutil.copytree(tiny_model, work)
    patients = ["é1", "è1", "e1", "y" * 300]
    rows = [f"{p},p{i},{i + 1},{i % 2}" for i, p in enumerate(patients)]
    table = work / "ids.csv"
    table.write_text("patient_id,slide_id,time,event\n" + "\n".join(rows) + "\n")
    out = work / "heatmaps"
    result = run(
        "heatmap",
        "--model",
        work / "model",
        "--features",
        work / "features",
        "--clinical",
        table,
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    index = pd.read_csv(out / "heatmaps.csv", dtype=str)
    assert set(index["patient_id"]) == set(patients)
    paths = [Path(p) for p in index["path"]]  # absolute, as heatmap writes them
    assert len(set(paths)) == len(paths) and all(p.is_file() for p in paths)
    assert len({p.parent for p in paths}) == len(patients)  # one folder per patient
