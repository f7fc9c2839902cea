"""Grad-CAM through the encoder, slide-aware heatmaps and ``crcrs heatmap``.

Everything runs on tiny timm models with random weights saved in ``tmp_path`` (``test_resnet``,
``test_efficientnet``, ``test_vit``), 64-px tiles and a 768 x 512 pyramidal TIFF written with
tifffile, whose features come from the real extraction pipeline.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("timm")
pytest.importorskip("captum")
pytest.importorskip("openslide")

from feature_extraction.encoding.encoders import TruncatedResNet, create_encoder  # noqa: E402
from feature_extraction.encoding.tile_encoder import Encoder  # noqa: E402
from feature_extraction.explain.encoder import check_reembedding, reembed  # noqa: E402
from feature_extraction.explain.gradcam import (  # noqa: E402
    GradCAMSettings,
    gradcam_tiles,
    target_layer,
)
from feature_extraction.explain.heatmaps import HeatmapJob, make_heatmaps  # noqa: E402
from feature_extraction.explain.pixels import open_slide, read_tiles, thumbnail  # noqa: E402
from feature_extraction.running.pipeline import extract  # noqa: E402
from feature_extraction.running.settings import ExtractSettings  # noqa: E402
from feature_extraction.synthetic.slides import write_pyramidal_tiff  # noqa: E402
from mil_crcrs.data.bags import PatientBag  # noqa: E402
from mil_crcrs.data.cohort import DataWarning  # noqa: E402
from mil_crcrs.data.store import FeatureMeta, read_bag, write_bag  # noqa: E402
from mil_crcrs.ensemble import CRCRSModel  # noqa: E402
from mil_crcrs.errors import InputError, SettingError  # noqa: E402
from mil_crcrs.explain.integrated_gradients import feature_integrated_gradients  # noqa: E402
from mil_crcrs.explain.render import slide_heatmaps  # noqa: E402
from mil_crcrs.explain.scores import tile_scores  # noqa: E402
from mil_crcrs.explain.settings import HeatmapSettings  # noqa: E402
from mil_crcrs.models import create_model  # noqa: E402
from mil_crcrs.train.cutoff import Cutoff  # noqa: E402

TILE = 64  # tile edge at the target resolution
BLUE_BLOCK = (256, 128)  # level-0 top-left of a blue 128 x 128 block: exactly one tile


def save_random_weights(path: Path, arch: str, seed: int) -> Path:
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    torch.save(model.state_dict(), path)
    return path


def toy_model(dim: int, encoder: str, seed: int = 0, sign: float = 1.0) -> CRCRSModel:
    """Two random abmil fold models; ``sign=-1`` negates every risk (and so the CRCRS)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        folds = [create_model("abmil", in_dim=dim, hidden_dim=16, attn_dim=8) for _ in range(2)]
    offsets = [0.05, -0.02]
    if sign < 0:
        with torch.no_grad():
            for fold in folds:
                fold.head.weight.neg_()
                fold.head.bias.neg_()
        offsets = [-o for o in offsets]
    return CRCRSModel(folds, offsets, Cutoff(0.0, "median"), feature_dim=dim, encoder=encoder)


def bag_of(features: np.ndarray) -> PatientBag:
    n = len(features)
    grid = np.stack([np.arange(n), np.zeros(n)], 1).astype(np.int64)
    return PatientBag("P1", features, grid * 128, grid, ("s1",), np.zeros(n, dtype=np.int64))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A slide, its features from the extraction pipeline, weights files and a model dir."""
    root = tmp_path_factory.mktemp("gradcam")
    rng = np.random.default_rng(0)
    height, width = 512, 768
    image = np.full((height, width, 3), 240, dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    tissue = ((yy - 256) / 230) ** 2 + ((xx - 384) / 340) ** 2 < 1
    pink = np.stack(
        [
            200 + 30 * rng.random(tissue.shape),
            120 + 60 * rng.random(tissue.shape),
            170 + 40 * rng.random(tissue.shape),
        ],
        -1,
    ).astype(np.uint8)
    image[tissue] = pink[tissue]
    x, y = BLUE_BLOCK
    image[y : y + 128, x : x + 128] = (60, 60, 140)
    write_pyramidal_tiff(root / "slides" / "S1.tiff", image, mpp=0.5, n_levels=3, tile_px=128)
    weights = save_random_weights(root / "resnet_a.pth", "test_resnet", seed=0)
    other = save_random_weights(root / "resnet_b.pth", "test_resnet", seed=1)
    settings = ExtractSettings(
        encoder="test_resnet",
        weights=str(weights),
        target_mpp=1.0,
        tile_size_px=TILE,
        min_tissue_fraction=0.0,
        num_workers=0,
        qc=False,
        progress=False,
        device="cpu",
        batch_size=8,
    )
    result = extract([root / "slides"], root / "features", settings)
    assert result.done == ["S1"]
    toy_model(96, "test_resnet").save(root / "model")
    return {
        "root": root,
        "weights": weights,
        "other": other,
        "features": root / "features",
        "slides": root / "slides",
        "model": root / "model",
        "image": image,
    }


# -- the encoder's layer --------------------------------------------------------------------------


def test_target_layer_is_the_last_feature_map(tmp_path):
    import timm

    def enc(arch: str) -> Encoder:
        return create_encoder(arch, save_random_weights(tmp_path / f"{arch}.pth", arch, 0))

    resnet = enc("test_resnet")
    assert target_layer(resnet) is resnet.model.layer4
    effnet = enc("test_efficientnet")
    assert target_layer(effnet) is effnet.model.bn2  # after conv_head: the map that is pooled
    vit = enc("test_vit")
    assert target_layer(vit) is vit.model.blocks[-1]
    trunc = TruncatedResNet(timm.create_model("resnet26", pretrained=False))
    spec = replace(resnet.spec, name="resnet26_trunc", dim=1024)
    assert target_layer(Encoder(trunc, spec)) is trunc.layer3  # CLAM's cut


# -- Grad-CAM equals the textbook computation -------------------------------------------------------


def manual_gradcam(model, features, index, tile, encoder, vit: bool) -> np.ndarray:
    """Grad-CAM written out: ReLU(sum_c mean(dy/dA_c) A_c), bilinear to the tile, / max.

    A is layer4's output for the ResNet, the tokens entering the ViT's last block (the output of
    the block before it) for the ViT.
    """
    layer = encoder.model.blocks[-2] if vit else encoder.model.layer4
    store = {}

    def keep(module, args, output):
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(keep)
    try:
        x = encoder.preprocess(torch.as_tensor(tile[None]))
        feats = torch.as_tensor(features, dtype=torch.float32).clone()
        feats[index] = encoder(x)[0]
        model.risk(feats[None])[0].sum().backward()
    finally:
        handle.remove()
    a, g = store["a"], store["a"].grad
    if vit:  # drop the CLS token; tokens (1, h*w, C) -> (1, C, h, w)
        side = int(round((a.shape[1] - 1) ** 0.5))
        a, g = (t[:, 1:].transpose(1, 2).reshape(1, -1, side, side) for t in (a, g))
    cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True).clamp_min(0)
    cam = F.interpolate(cam.detach(), size=tile.shape[:2], mode="bilinear")[0, 0].numpy()
    return cam / cam.max() if cam.max() > 0 else cam


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
def test_gradcam_equals_a_manual_gradcam(tmp_path, arch):
    encoder = create_encoder(arch, save_random_weights(tmp_path / "w.pth", arch, 0))
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, size=(5, TILE, TILE, 3), dtype=np.uint8)
    features = reembed(encoder, tiles)
    bag = bag_of(features)
    # ReLU hides one sign of the map: the model and its negation together show all of it.
    nonzero = 0
    for sign in (1.0, -1.0):
        model = toy_model(encoder.spec.dim, arch, sign=sign)
        cams = gradcam_tiles(model, bag, [3, 1], tiles[[3, 1]], encoder)
        for cam, index in zip(cams, [3, 1], strict=True):
            expected = manual_gradcam(
                model, features, index, tiles[index], encoder, arch == "test_vit"
            )
            np.testing.assert_allclose(cam.cam, expected, atol=1e-5)
            assert cam.cam.shape == (TILE, TILE) and 0.0 <= cam.cam.min() <= cam.cam.max() <= 1.0
            nonzero += cam.cam_max > 0
            # Re-embedding the tile leaves the patient's CRCRS as the stored features give it.
            assert cam.crcrs == pytest.approx(model.patient_attention(bag)[0], abs=1e-5)
            assert cam.reembed_error < 1e-6
    assert nonzero >= 2  # the comparison was not between two all-zero maps


# -- the reproduction check -----------------------------------------------------------------------


def test_reembedding_check_names_the_encoder(world):
    encoder = create_encoder("test_resnet", world["weights"])
    other = create_encoder("test_resnet", world["other"])
    bag = read_bag(world["features"] / "S1.h5")
    with open_slide(world["slides"] / "S1.tiff", bag.info) as slide:
        tiles = read_tiles(slide, bag.coords[:4], bag.info)
    errors = check_reembedding(encoder, tiles, bag.features[:4])
    assert errors.max() < 2e-3  # float16 storage only: tiles are cut as extraction cut them
    with pytest.raises(InputError, match="encoder 'test_resnet'.*does not reproduce"):
        check_reembedding(other, tiles, bag.features[:4])
    with pytest.raises(InputError, match="dim 96 but encoder 'test_vit'"):
        vit = create_encoder(
            "test_vit", save_random_weights(world["root"] / "v.pth", "test_vit", 0)
        )
        check_reembedding(vit, tiles, bag.features[:4])


def test_gradcam_refuses_features_from_other_weights(world, tmp_path):
    job = HeatmapJob(
        HeatmapSettings(top_k=2, maps=("attention",)), gradcam=GradCAMSettings(), device="cpu"
    )
    slides = world["slides"]
    # Our files record the weights' checksum: a wrong file is caught before any drawing.
    with pytest.raises(InputError, match="not the weights file"):
        make_heatmaps(
            world["model"],
            world["features"],
            tmp_path / "a",
            slides,
            job=replace(job, weights=world["other"]),
        )
    with pytest.raises(SettingError, match="^weights file is needed: .*with weights file"):
        make_heatmaps(world["model"], world["features"], tmp_path / "b", slides, job=job)
    # A file that records no extraction settings: the re-embedding check is the safeguard.
    bag = read_bag(world["features"] / "S1.h5")
    info = bag.info
    meta = FeatureMeta(
        slide_id="S1",
        encoder="test_resnet",
        tile_size_px=info.tile_size_px,
        tile_size_level0=info.tile_size_level0,
        target_mpp=info.target_mpp,
        slide_mpp=info.slide_mpp,
        level0_width=info.level0_width,
        level0_height=info.level0_height,
    )
    write_bag(tmp_path / "bare" / "S1.h5", bag.features, bag.coords, meta)
    with pytest.raises(InputError, match="encoder 'test_resnet'.*does not reproduce"):
        make_heatmaps(
            world["model"],
            tmp_path / "bare",
            tmp_path / "c",
            slides,
            job=replace(job, weights=world["other"]),
        )
    assert not (tmp_path / "c" / "S1" / "gradcam.png").exists()


# -- slides: thumbnails, tiles, the whole run -----------------------------------------------------------


def test_thumbnail_and_tiles_come_from_the_slide(world):
    info = read_bag(world["features"] / "S1.h5").info
    with open_slide(world["slides"] / "S1.tiff", info) as slide:
        thumb, downsample = thumbnail(slide, max_side_px=192)
        tiles = read_tiles(slide, np.array([BLUE_BLOCK, [0, 0]]), info)
    assert downsample == 4.0 and thumb.shape == (128, 192, 3)
    r, g, b = thumb[48, 80].astype(int)  # inside the blue block at 1/4 scale
    assert b > r + 40 and b > g + 40
    assert tiles.shape == (2, TILE, TILE, 3)  # 128 level-0 px at 0.5 um/px -> 64 px at 1 um/px
    assert np.abs(tiles[0].mean((0, 1)) - [60, 60, 140]).max() < 12  # JPEG-compressed block
    # alpha = 0: the heatmap is the thumbnail itself.
    bag = read_bag(world["features"] / "S1.h5")
    model = CRCRSModel.load(world["model"])
    scores = tile_scores(model, bag_of(bag.features.astype(np.float32)))
    scores = replace(scores, slide_ids=("S1",), coords=bag.coords)
    (heatmap,) = slide_heatmaps(
        scores,
        {"S1": info},
        HeatmapSettings(maps=("attention",), alpha=0.0),
        thumbnails={"S1": (thumb, downsample)},
    )
    np.testing.assert_array_equal(heatmap.image, thumb)


def test_the_wrong_slide_is_refused(world, tmp_path):
    small = world["image"][:256, :256].copy()
    write_pyramidal_tiff(tmp_path / "S1.tiff", small, mpp=0.5, n_levels=1, tile_px=128)
    info = read_bag(world["features"] / "S1.h5").info
    with pytest.raises(InputError, match="is it the right slide"):
        open_slide(tmp_path / "S1.tiff", info)


def test_make_heatmaps_with_slides_and_gradcam(world, tmp_path):
    result = make_heatmaps(
        world["model"],
        world["features"],
        tmp_path / "out",
        slides=world["slides"],
        job=HeatmapJob(
            HeatmapSettings(top_k=3, max_side_px=256),
            gradcam=GradCAMSettings(integrated_gradients=True, ig_steps=8),
            weights=world["weights"],
            device="cpu",
        ),
    )
    out = tmp_path / "out"
    kinds = result.images.set_index("kind")["path"]
    for kind in ("attention", "contribution", "integrated_gradients", "gallery", "gradcam"):
        assert Path(kinds[kind]).read_bytes()[:4] == b"\x89PNG", kind
    assert set(result.images.loc[result.images["kind"] == "attention", "background"]) == {
        "thumbnail"
    }
    tiles = pd.read_csv(out / "tiles.csv")
    assert list(tiles["group"]) == ["top"] * 3 + ["bottom"] * 3
    top = tiles[tiles["group"] == "top"]
    assert (top["reembed_error"] < 2e-3).all()
    assert all(Path(p).is_file() for p in top["gradcam_path"])
    assert tiles["integrated_gradients"].notna().all()
    # The gallery ranks by attention: top tiles have more attention than bottom ones.
    assert top["attention"].min() >= tiles.loc[tiles["group"] == "bottom", "attention"].max()
    saved = json.loads((out / "heatmaps.json").read_text())
    assert saved["heatmap_settings"]["top_k"] == 3 and saved["gradcam_settings"]["ig_steps"] == 8
    assert not list(out.rglob(".*"))  # no temporary files left


def test_integrated_gradients_are_complete():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((12, 8)).astype(np.float32)
    model = toy_model(8, "toy")
    for baseline in ("zeros", "bag_mean"):
        result = feature_integrated_gradients(model, bag_of(features), baseline, n_steps=64)
        assert result.crcrs == pytest.approx(model.patient_attention(bag_of(features))[0])
        # Completeness: the attributions add up to the change of the CRCRS from the baseline,
        # up to the integration error (0.3 % here with 64 steps), which captum reports as delta.
        gap = result.per_tile.sum() - (result.crcrs - result.baseline_crcrs)
        assert abs(gap) < 0.01 * abs(result.crcrs - result.baseline_crcrs)
        assert result.delta == pytest.approx(gap, abs=1e-6)


def test_without_slides_maps_go_on_a_blank_canvas_and_gradcam_is_refused(world, tmp_path):
    result = make_heatmaps(
        world["model"],
        world["features"],
        tmp_path / "out",
        job=HeatmapJob(HeatmapSettings(top_k=2), device="cpu"),
    )
    assert set(result.images["kind"]) == {"attention", "contribution"}
    assert set(result.images["background"]) == {"blank"}
    assert len(result.tiles) == 4
    with pytest.raises(SettingError, match="^gradcam needs the slide files"):
        make_heatmaps(
            world["model"],
            world["features"],
            tmp_path / "x",
            job=HeatmapJob(gradcam=GradCAMSettings()),
        )
    with pytest.raises(SettingError, match="^patients names 1 patient"):
        make_heatmaps(
            world["model"], world["features"], tmp_path / "y", job=HeatmapJob(patients=["nobody"])
        )


# -- the command line -----------------------------------------------------------------------------


def test_cli_heatmap(world, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    runner = CliRunner()
    args = [
        "heatmap",
        "--model",
        str(world["model"]),
        "--features",
        str(world["features"]),
        "--slides",
        str(world["slides"]),
        "--out",
        str(tmp_path / "out"),
        "--top-k",
        "2",
        "--gradcam",
        "--weights",
        str(world["weights"]),
        "--patients",
        "S1",
        "--smooth",
        "1",
        "--cmap",
        "viridis",
        "--device",
        "cpu",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "images for 1 patient(s)" in result.output
    assert (tmp_path / "out" / "S1" / "S1_attention.png").is_file()
    assert (tmp_path / "out" / "S1" / "gradcam.png").is_file()

    bad = runner.invoke(cli, [*args[:9], "--cmap", "nope"])
    assert bad.exit_code == 2 and "error: unknown colormap 'nope'" in bad.output
    bad = runner.invoke(cli, [*args[:5], "--out", str(tmp_path / "o2"), "--gradcam"])
    assert bad.exit_code == 2 and "error: --gradcam needs the slide files" in bad.output


# -- CLAM's folders: tile size from patches/ or --tile-size, encoder from --encoder ----------------


def clam_folder(world, root: Path, h5=True, pt=False, patches=True) -> Path:
    """The world's features laid out as CLAM writes them (h5_files/, pt_files/, patches/).

    The features were cut 64 px at 1 um/px from a 0.5 um/px slide: CLAM's patch_size 64 at
    patch_level 1 (downsample 2), 128 level-0 px.
    """
    import h5py

    bag = read_bag(world["features"] / "S1.h5")
    features = bag.features.astype(np.float32)
    if h5:
        (root / "h5_files").mkdir(parents=True)
        with h5py.File(root / "h5_files" / "S1.h5", "w") as f:  # no attributes at all
            f["features"] = features
            f["coords"] = bag.coords.astype(np.int32)
    if pt:
        (root / "pt_files").mkdir(parents=True)
        torch.save(torch.from_numpy(features), root / "pt_files" / "S1.pt")
    if patches:
        (root / "patches").mkdir(parents=True)
        with h5py.File(root / "patches" / "S1.h5", "w") as f:
            f["coords"] = bag.coords
            f["coords"].attrs.update(
                {"patch_size": 64, "patch_level": 1, "downsample": [2.0, 2.0], "name": "S1"}
            )
    return root


# CLAM's files name no encoder; the model's encoder is named, so scoring them warns (tested in
# test_peer_cli.py); here the warning is expected, not the subject.
_CLAM_NAMES_NO_ENCODER = pytest.mark.filterwarnings(
    "ignore:features in .* do not name their encoder:mil_crcrs.data.cohort.DataWarning"
)


@_CLAM_NAMES_NO_ENCODER
def test_cli_heatmap_gradcam_and_geojson_on_clam_h5_files(world, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    clam = clam_folder(world, tmp_path / "clam")
    args = [
        "heatmap",
        *("--model", str(world["model"]), "--features", str(clam / "h5_files")),
        *("--slides", str(world["slides"]), "--top-k", "2", "--device", "cpu", "--gradcam"),
        *("--weights", str(world["weights"]), "--geojson", "--out", str(tmp_path / "out")),
    ]
    runner = CliRunner()
    with warnings.catch_warnings():  # the CLI shows the warning as one line
        warnings.simplefilter("always", DataWarning)
        bad = runner.invoke(cli, args)  # CLAM's files do not name their encoder
    assert "warning: features in" in bad.output and "do not name their encoder" in bad.output
    assert bad.exit_code == 2, bad.output
    assert "does not name its encoder" in bad.output and "--encoder NAME" in bad.output
    wrong = runner.invoke(cli, [*args, "--encoder", "test_vit"])
    assert wrong.exit_code == 2 and "trained on 'test_resnet'" in wrong.output, wrong.output

    result = runner.invoke(cli, [*args, "--encoder", "test_resnet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    for name in ("S1_attention.png", "top_tiles.png", "gradcam.png", "S1.geojson"):
        assert (out / "S1" / name).is_file(), name
    tiles = pd.read_csv(out / "tiles.csv")
    # The tiles were cut at CLAM's patch level and size: the encoder reproduces the features.
    assert (tiles.loc[tiles["group"] == "top", "reembed_error"] < 2e-3).all()
    collection = json.loads((out / "S1" / "S1.geojson").read_text())
    coords = read_bag(clam / "h5_files" / "S1.h5").coords
    assert len(collection["features"]) == len(coords)
    first = collection["features"][0]["geometry"]["coordinates"][0]
    x, y = coords[0]
    assert first == [[x, y], [x + 128, y], [x + 128, y + 128], [x, y + 128], [x, y]]
    assert not list(out.rglob(".*"))  # no temporary files left


@_CLAM_NAMES_NO_ENCODER
def test_clam_h5_files_without_patches_need_tile_size(world, tmp_path):
    from mil_crcrs.explain.tiling import TileSize

    clam = clam_folder(world, tmp_path / "clam", patches=False)
    slides = world["slides"]
    job = HeatmapJob(
        HeatmapSettings(top_k=2),
        device="cpu",
        encoder="test_resnet",  # CLAM's files do not name it
    )
    with pytest.raises(SettingError, match="^tile_size is needed: .*records no tile size"):
        make_heatmaps(world["model"], clam, tmp_path / "a", slides, job=job)
    # 64 px at 1 um/px = 128 level-0 px on this 0.5 um/px slide; Grad-CAM then reproduces
    # the features, which it refuses to do for tiles cut at any other size.
    gradcam = replace(job, gradcam=GradCAMSettings(), weights=world["weights"])
    result = make_heatmaps(
        world["model"],
        clam,
        tmp_path / "b",
        slides,
        job=replace(gradcam, tile_size=TileSize.parse("64@1.0")),
    )
    assert (result.tiles.loc[result.tiles["group"] == "top", "reembed_error"] < 2e-3).all()
    with pytest.raises(InputError, match="does not reproduce the stored features"):
        make_heatmaps(
            world["model"],
            clam,
            tmp_path / "c",
            slides,
            # 128 level-0 px read at level 0, never resized
            job=replace(gradcam, tile_size=TileSize(128)),
        )
    # A stated size that contradicts CLAM's patches file is refused, not preferred.
    clam2 = clam_folder(world, tmp_path / "clam2")
    with pytest.raises(
        SettingError,
        match="^tile_size 256 is 256 level-0 px but .* records tiles of 128 level-0 px",
    ):
        make_heatmaps(
            world["model"], clam2, tmp_path / "d", slides, job=replace(job, tile_size=TileSize(256))
        )


@_CLAM_NAMES_NO_ENCODER
def test_clam_pt_files_take_coords_from_patches_or_refuse(world, tmp_path):
    import h5py

    from mil_crcrs.data.store import read_info

    alone = clam_folder(world, tmp_path / "alone", h5=False, pt=True, patches=False)
    with pytest.raises(InputError, match="tile coordinates unknown"):
        make_heatmaps(
            world["model"],
            alone,
            tmp_path / "a",
            job=HeatmapJob(device="cpu", encoder="test_resnet"),
        )
    # A patches file without CLAM's attributes gives coords but no tile size.
    bare = clam_folder(world, tmp_path / "bare", h5=False, pt=True)
    with h5py.File(bare / "patches" / "S1.h5", "a") as f:
        f["coords"].attrs.clear()
    info = read_info(bare / "pt_files" / "S1.pt")
    assert info.has_coords and info.tile_size_level0 is None
    with_patches = clam_folder(world, tmp_path / "p", h5=False, pt=True)
    info = read_info(with_patches / "pt_files" / "S1.pt")
    assert (info.tile_size_level0, info.tile_size_px, info.level) == (128, 64, 1)
    result = make_heatmaps(
        world["model"],
        with_patches,
        tmp_path / "b",
        slides=world["slides"],
        job=HeatmapJob(HeatmapSettings(top_k=2), device="cpu", encoder="test_resnet"),
    )
    assert set(result.images["kind"]) == {"attention", "contribution", "gallery"}
    np.testing.assert_array_equal(
        result.tiles[["x", "y"]].to_numpy(),
        read_bag(world["features"] / "S1.h5").coords[result.tiles["tile"].to_numpy()],
    )
