"""Heatmaps and Grad-CAM on STAMP's and TRIDENT's feature files, with the slides.

One 768 x 512 pyramidal TIFF at 0.5 um/px in a sub-folder (as STAMP users keep slides), its
features from our extraction with the truncated ResNet-50 (random weights saved in
``tmp_path``), written as TRIDENT writes a ``resnet50`` job and as STAMP writes a feature tree.
Nothing is given that the files or the slide do not say: no ``--slide-mpp``, no tile size.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from _peer_files import stamp_feature_path, trident_coords_attrs, write_stamp, write_trident
from click.testing import CliRunner

pytest.importorskip("timm")
pytest.importorskip("captum")
pytest.importorskip("openslide")

from cli import main as cli_main  # noqa: E402
from cli.main import cli  # noqa: E402
from feature_extraction.running.pipeline import extract  # noqa: E402
from feature_extraction.running.settings import ExtractSettings  # noqa: E402
from feature_extraction.synthetic.slides import write_pyramidal_tiff  # noqa: E402
from mil_crcrs.data.cohort import DataWarning  # noqa: E402
from mil_crcrs.data.store import read_bag  # noqa: E402
from mil_crcrs.ensemble import CRCRSModel  # noqa: E402
from mil_crcrs.models import create_model  # noqa: E402
from mil_crcrs.train.cutoff import Cutoff  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # from conftest.py


def run(*args):
    cli_main._shown.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    import timm

    root = tmp_path_factory.mktemp("peer_heatmaps")
    rng = np.random.default_rng(0)
    image = np.full((512, 768, 3), 235, dtype=np.uint8)
    image[64:448, 96:672] = rng.integers(120, 220, size=(384, 576, 3), dtype=np.uint8)
    image[192:320, 256:384] = (60, 60, 140)
    slide = root / "wsi" / "centre_a" / "S1.tiff"
    write_pyramidal_tiff(slide, image, mpp=0.5, n_levels=3, tile_px=128)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        resnet = timm.create_model("resnet50", pretrained=False, num_classes=0)
    state = {k: v for k, v in resnet.state_dict().items() if not k.startswith(("layer4.", "fc."))}
    weights = root / "resnet50_trunc.pth"
    torch.save(state, weights)
    settings = ExtractSettings(
        encoder="resnet50_trunc",
        weights=str(weights),
        target_mpp=1.0,
        tile_size_px=64,
        min_tissue_fraction=0.0,
        num_workers=0,
        qc=False,
        progress=False,
        device="cpu",
        batch_size=16,
    )
    assert extract([slide], root / "ours", settings).done == ["S1"]
    bag = read_bag(root / "ours" / "S1.h5")
    features = bag.features.astype(np.float32)
    # TRIDENT: 64 px at 10x from a 20x (0.5 um/px) slide, its encoder named "resnet50".
    attrs = trident_coords_attrs("S1", 64, 20, 10, 768, 512)
    job = root / "trident" / "10x_64px_0px_overlap"
    write_trident(job, "S1", features, bag.coords, attrs, "resnet50")
    # STAMP: 64 um tiles of 64 px, coordinates in microns, the slide's sub-folder mirrored.
    path = stamp_feature_path(root / "stamp", "resnet50_trunc", "1a2b3c", root / "wsi", slide)
    write_stamp(path.parent, "S1", features, bag.coords, 0.5, "resnet50_trunc", False, 64.0, 64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        folds = [create_model("abmil", in_dim=1024, hidden_dim=16, attn_dim=8) for _ in range(2)]
    model = CRCRSModel(
        folds, [0.05, -0.02], Cutoff(0.0, "median"), feature_dim=1024, encoder="resnet50_trunc"
    )
    model.save(root / "model")
    return root, weights, bag


@pytest.mark.parametrize("peer", ["trident", "stamp"])
def test_heatmaps_and_gradcam_on_peer_features(peers, tmp_path, peer):
    root, weights, bag = peers
    out = tmp_path / "out"
    result = run(
        "heatmap", "--model", root / "model", "--features", root / peer, "--slides", root / "wsi",
        "--top-k", "2", "--gradcam", "--weights", weights, "--geojson", "--device", "cpu",
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("S1_attention.png", "S1_contribution.png", "top_tiles.png", "gradcam.png"):
        assert (out / "S1" / name).is_file(), name
    tiles = pd.read_csv(out / "tiles.csv")
    top = tiles[tiles["group"] == "top"]
    assert len(top) == 2 and (top["reembed_error"] < 0.01).all()  # the tiles the files name
    collection = json.loads((out / "S1" / "S1.geojson").read_text())
    ring = np.array(collection["features"][0]["geometry"]["coordinates"][0])
    x, y = bag.coords[0]
    assert ring.min(0).tolist() == [x, y] and ring.max(0).tolist() == [x + 128, y + 128]
    reference = collection["properties"]["contribution_reference"]
    assert (tiles["contribution_reference"] == reference).all()


def test_trident_resnet50_is_our_truncated_resnet(peers, tmp_path):
    root, weights, _ = peers
    # CLAM's name for the same network is accepted, not refused as a contradiction.
    result = run(
        "heatmap", "--model", root / "model", "--features", root / "trident", "--slides",
        root / "wsi", "--top-k", "1", "--gradcam", "--weights", weights, "--encoder",
        "resnet50_trunc", "--device", "cpu", "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    inspected = run("inspect", root / "trident")
    assert "encoder: resnet50_trunc; dim 1024" in inspected.stdout, inspected.output
