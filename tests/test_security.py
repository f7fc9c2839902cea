"""Hostile inputs: path-like ids never reach outside the given folders; pickles never run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from mil_crcrs import load_model
from mil_crcrs.data.store import FeatureStore, read_bag, write_bag
from mil_crcrs.errors import InputError
from mil_crcrs.models import create_model
from mil_crcrs.train.checkpoints import FoldCheckpoints
from tests.helpers import grid_coords, make_meta, record_weights

HOSTILE_IDS = ["../escape", "../../escape", "..", "a/../../escape", "/tmp/escape", "sub/x"]


class Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _tree(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


@pytest.fixture
def sandbox(tmp_path, tiny_model) -> Path:
    """``tmp_path/work/`` holds a copy of the tiny model and its features; a decoy feature file
    ``tmp_path/escape.h5`` (and ``/tmp/escape.h5``-like names) lie outside it."""
    work = tmp_path / "work"
    shutil.copytree(tiny_model, work)
    features = np.ones((5, 4), np.float32)
    write_bag(tmp_path / "escape.h5", features, grid_coords(5, 512), make_meta("escape"))
    return work


def test_path_like_slide_ids_never_read_outside_the_features_folder(sandbox):
    rows = "".join(f"p{i},{hostile},1,1\n" for i, hostile in enumerate(HOSTILE_IDS))
    table = sandbox / "hostile.csv"
    table.write_text(f"patient_id,slide_id,time,event\n{rows}p11,p11,2,0\n")
    args = ["predict", "--model", str(sandbox / "model"), "--features", str(sandbox / "features")]
    out = sandbox / "predictions.csv"
    result = CliRunner().invoke(cli, [*args, "--clinical", str(table), "--out", str(out)])
    # the decoy outside the folder is never taken for any of them
    assert result.exit_code == 2, result.output
    assert f"{len(HOSTILE_IDS)} slide(s) in the table have no feature file" in result.output
    assert not out.exists()


def test_path_like_patient_ids_never_write_outside_the_output_folders(sandbox):
    rows = "".join(f"{hostile},p{i},1,{i % 2}\n" for i, hostile in enumerate(HOSTILE_IDS))
    table = sandbox / "hostile.csv"
    table.write_text(f"patient_id,slide_id,time,event\n{rows}")
    before = _tree(sandbox.parent)
    common = ["--model", str(sandbox / "model"), "--features", str(sandbox / "features")]
    common += ["--clinical", str(table), "--device", "cpu"]
    outputs = [
        sandbox / "p.csv",
        sandbox / "p.run.log",
        sandbox / "attention",
        sandbox / "heatmaps",
        sandbox / ".heatmaps.lock",  # heatmap's one-writer lock, named by --out, not by ids
    ]
    predicted = CliRunner().invoke(
        cli, ["predict", *common, "--out", str(outputs[0]), "--attention", str(outputs[2])]
    )
    assert predicted.exit_code == 0, predicted.output
    drawn = CliRunner().invoke(cli, ["heatmap", *common, "--out", str(outputs[3])])
    assert drawn.exit_code == 0, drawn.output
    new = _tree(sandbox.parent) - before
    inside = [p for p in new if any(p == o or o in p.parents for o in outputs)]
    assert new and sorted(inside) == sorted(new), sorted(map(str, set(new) - set(inside)))
    assert len(list(outputs[3].glob("*/*.png"))) >= len(HOSTILE_IDS)
    assert not Path("/tmp/escape").exists()


def test_a_model_directory_cannot_point_its_weights_outside_itself(sandbox):
    outside = sandbox.parent / "fold_1.pt"
    shutil.copy(sandbox / "model" / "fold_1.pt", outside)
    config_path = sandbox / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config["weights"] = ["../../fold_1.pt", "fold_2.pt"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"weights '../../fold_1.pt' is not a file in"):
        load_model(sandbox / "model")


def test_pickled_payloads_are_refused_everywhere_and_never_run(sandbox, tmp_path):
    marker = tmp_path / "code-ran"
    # a model directory's weights
    torch.save({"x": Payload(marker)}, sandbox / "model" / "fold_1.pt")
    record_weights(sandbox / "model")  # past the digest check, to the loader's own refusal
    result = CliRunner().invoke(
        cli,
        ["predict", "--model", str(sandbox / "model"), "--features", str(sandbox / "features")]
        + ["--out", str(tmp_path / "p.csv")],
    )
    assert result.exit_code == 2 and "fold_1.pt: refused to load" in result.output
    # a CLAM-style .pt feature file
    torch.save(Payload(marker), tmp_path / "slide.pt")
    with pytest.raises(InputError, match="slide.pt: not a readable torch tensor file"):
        read_bag(tmp_path / "slide.pt")
    with pytest.raises(InputError):
        FeatureStore(tmp_path / "slide.pt").load("slide")
    # a fold checkpoint of an interrupted fit: treated as absent (the fold is trained again)
    model = create_model("mean", in_dim=4)
    folder = tmp_path / "ckpt"
    checkpoints = FoldCheckpoints(folder, {"settings": {}}, resume=False)
    torch.save({"weights": Payload(marker)}, folder / "seed0_fold1.pt")
    (folder / "seed0_fold1.json").write_text(
        json.dumps({"hash": checkpoints.hash, "key": "seed0_fold1", "risk": [0.0]})
    )
    assert checkpoints.load("seed0_fold1", model) is None
    assert not marker.exists()
