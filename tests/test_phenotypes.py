"""Tile phenotypes: clustering, reuse on a validation cohort, statistics against lifelines,
the atlas folder, the report section and every bad input of ``crcrs phenotypes``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mil_crcrs import fit
from mil_crcrs.errors import InputError, SettingError
from mil_crcrs.phenotypes import (
    ClusterSettings,
    PhenotypeSettings,
    analyse_phenotypes,
    fit_phenotypes,
    load_phenotypes,
    phenotype_atlas,
)
from mil_crcrs.phenotypes.statistics import fraction_cox
from tests.helpers import assert_one_line_error, run, tiny, write_cohort

FAST = PhenotypeSettings(
    cluster=ClusterSettings(k=3, seed=0), map_tiles=0, slide_maps=2, device="cpu"
)


def blobs(seed: int = 0, n: int = 60, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated groups of (60, 80, 100) tiles along different axes."""
    rng = np.random.default_rng(seed)
    parts, labels = [], []
    for j, size in enumerate((n, n + 20, n + 40)):
        centre = np.zeros(dim)
        centre[j] = 10.0
        parts.append(centre + rng.normal(size=(size, dim)))
        labels.append(np.full(size, j))
    return np.concatenate(parts).astype(np.float32), np.concatenate(labels)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """A tiny abmil model on a 36-patient training cohort, a 20-patient validation cohort, and
    the training cohort's atlas."""
    root = tmp_path_factory.mktemp("phenotypes")
    features, clinical = write_cohort(root / "train")
    val_features, val_clinical = write_cohort(root / "val", n=20, seed=1)
    model = fit(features, clinical, tiny())
    model.save(root / "model")
    atlas = phenotype_atlas(model, features, clinical, root / "atlas", FAST)
    return {
        "root": root,
        "model": model,
        "features": features,
        "clinical": clinical,
        "val_features": val_features,
        "val_clinical": val_clinical,
        "atlas": atlas,
    }


# -- clustering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("l2", [False, True])
def test_assignment_is_kmeans_predict_relabelled_by_share(l2):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    x, truth = blobs()
    model = fit_phenotypes(x, ClusterSettings(k=3, pca_dims=8, l2=l2))
    labels, distance = model.assign(x)
    # Phenotype 1 is the most common: the 100-tile group.
    assert [int(np.bincount(labels)[i]) for i in (1, 2, 3)] == [100, 80, 60]
    assert (labels == 3 - truth).all()
    y = normalize(x) if l2 else x
    z = PCA(n_components=8, random_state=0).fit_transform(y)
    km = KMeans(n_clusters=3, n_init=4, random_state=0).fit(z)
    assert pd.crosstab(labels, km.predict(z)).gt(0).sum(axis=1).eq(1).all()
    assert np.allclose(
        distance, np.linalg.norm(model.embed(x) - model.centres[labels - 1], axis=1), atol=1e-4
    )


def test_cluster_ids_are_stable_for_a_fixed_seed_and_survive_saving(tmp_path: Path):
    x, _ = blobs(seed=3)
    a = fit_phenotypes(x, ClusterSettings(k=4, seed=7), encoder="toy")
    b = fit_phenotypes(x, ClusterSettings(k=4, seed=7), encoder="toy")
    assert np.array_equal(a.centres, b.centres)
    assert np.array_equal(a.assign(x)[0], b.assign(x)[0])
    assert a.info["sample_share"] == sorted(a.info["sample_share"], reverse=True)
    a.save(tmp_path)
    loaded = load_phenotypes(tmp_path)
    assert loaded.encoder == "toy" and loaded.l2 == a.l2 and loaded.k == 4
    assert np.array_equal(loaded.assign(x)[0], a.assign(x)[0])


def test_k_is_chosen_by_silhouette_when_not_given():
    x, _ = blobs()
    model = fit_phenotypes(x, ClusterSettings(k_range=(2, 6), pca_dims=8))
    assert model.k == 3 and model.info["k_chosen_by"] == "silhouette"
    assert max(model.info["silhouette"], key=model.info["silhouette"].get) == "3"


def test_leiden_finds_the_groups():
    pytest.importorskip("leidenalg")
    x, truth = blobs()
    model = fit_phenotypes(x, ClusterSettings(method="leiden", resolution=0.1, pca_dims=8))
    labels, _ = model.assign(x)
    assert model.k == 3 and (labels == 3 - truth).all()


def test_bad_cluster_settings_name_the_setting():
    x, _ = blobs()
    with pytest.raises(SettingError, match="only 240 tiles"):
        fit_phenotypes(x, ClusterSettings(k=500))
    with pytest.raises(SettingError) as err:
        ClusterSettings(method="leiden", k=3)
    assert err.value.setting == "k"
    with pytest.raises(SettingError):
        ClusterSettings(method="dbscan")


def test_saved_phenotypes_are_read_without_pickle(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.array([object()], dtype=object), allow_pickle=True)
    (tmp_path / "phenotypes.npz").write_bytes((tmp_path / "x.npy").read_bytes())
    (tmp_path / "phenotypes.json").write_text("{}")
    with pytest.raises(InputError, match="not fitted phenotypes"):
        load_phenotypes(tmp_path)
    with pytest.raises(InputError, match="phenotypes.npz: no such file"):
        load_phenotypes(tmp_path / "nothing")


# -- statistics -----------------------------------------------------------------------------------


def test_cox_numbers_equal_lifelines_and_fdr_equals_scipy():
    from lifelines import CoxPHFitter
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(0)
    n = 80
    fractions = pd.DataFrame(rng.dirichlet([1, 2, 3], size=n), columns=["P1", "P2", "P3"])
    time = rng.exponential(np.exp(-3 * fractions["P1"].to_numpy())) * 100
    event = (rng.random(n) < 0.8).astype(int)
    out = fraction_cox(fractions, time, event)
    for j, name in enumerate(fractions.columns):
        z = (fractions[name] - fractions[name].mean()) / fractions[name].std(ddof=1)
        cph = CoxPHFitter().fit(
            pd.DataFrame({name: z, "time": time, "event": event}), "time", "event"
        )
        s = cph.summary.loc[name]
        assert out.loc[j, "hr_per_sd"] == pytest.approx(s["exp(coef)"], rel=1e-9)
        assert out.loc[j, "hr_lower"] == pytest.approx(s["exp(coef) lower 95%"], rel=1e-9)
        assert out.loc[j, "hr_upper"] == pytest.approx(s["exp(coef) upper 95%"], rel=1e-9)
        assert out.loc[j, "p"] == pytest.approx(s["p"], rel=1e-9)
    assert np.allclose(out["fdr"], false_discovery_control(out["p"]))
    assert out.loc[0, "hr_per_sd"] > 1.5 and out.loc[0, "fdr"] < 0.05


@pytest.mark.slow
def test_the_map_is_umap_coloured_by_phenotype_and_contribution(tmp_path: Path):
    from mil_crcrs.figures import write_png
    from mil_crcrs.phenotypes.figures import embed_2d, map_figure

    pytest.importorskip("umap")
    x, truth = blobs()
    xy, method = embed_2d(x, seed=0)
    assert method == "UMAP" and xy.shape == (len(x), 2) and np.isfinite(xy).all()
    # UMAP keeps the three groups apart: each point's nearest neighbour is of its own group.
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2) + np.eye(len(xy)) * 1e9
    assert (truth[d.argmin(axis=1)] == truth).mean() > 0.95
    fig = map_figure(xy, truth + 1, np.linspace(-1, 1, len(x)), 3, method)
    write_png(tmp_path / "map.png", fig)
    assert (tmp_path / "map.png").stat().st_size > 10_000


def test_a_constant_fraction_gets_a_note_not_a_crash():
    rng = np.random.default_rng(1)
    fractions = pd.DataFrame({"P1": [0.5] * 30, "P2": rng.random(30)})
    out = fraction_cox(fractions, rng.exponential(size=30), np.ones(30))
    assert np.isnan(out.loc[0, "hr_per_sd"]) and "same fraction" in out.loc[0, "note"]
    assert np.isfinite(out.loc[1, "hr_per_sd"])


# -- the atlas and its reuse ----------------------------------------------------------------------


def test_atlas_folder_and_scores_from_the_models_risk(trained):
    from mil_crcrs.explain.scores import tile_scores

    atlas, out = trained["atlas"], trained["root"] / "atlas"
    for name in ("phenotypes.npz", "phenotypes.json", "phenotypes.csv", "patient_fractions.csv",
                 "tiles.csv.gz", "galleries.csv", "forest.png", "atlas.json"):  # fmt: skip
        assert (out / name).is_file(), name
    assert len(list((out / "slide_maps").glob("*.png"))) == 2
    table = pd.read_csv(out / "phenotypes.csv")
    assert table["n_tiles"].sum() == atlas.tiles.n_tiles and table["share"].sum() == pytest.approx(
        1
    )
    tiles = pd.read_csv(out / "tiles.csv.gz")
    bag = atlas.inputs.bags[0]
    scores = tile_scores(trained["model"], bag)
    first = tiles[tiles["patient_id"] == bag.patient_id]
    assert np.allclose(first["contribution"], scores.contribution, atol=1e-6)
    assert np.allclose(first["attention"], scores.attention, atol=1e-6)
    fractions = pd.read_csv(out / "patient_fractions.csv")
    assert np.allclose(fractions[["P1", "P2", "P3"]].sum(axis=1), 1.0)
    assert "no slides given" in json.loads((out / "atlas.json").read_text())["notes"][0]


def test_validation_cohort_reuses_the_training_phenotypes(trained):
    out = trained["root"] / "atlas"
    val = analyse_phenotypes(
        trained["model"], trained["val_features"], trained["val_clinical"], FAST, phenotypes=out
    )
    assert val.reused and val.phenotypes.k == 3
    assert np.array_equal(val.phenotypes.centres, trained["atlas"].phenotypes.centres)
    bag = val.inputs.bags[0]
    expected, _ = load_phenotypes(out).assign(bag.features)
    assert np.array_equal(val.tiles.phenotype[: bag.n_tiles], expected)
    assert len(val.table) == 3 and len(val.fractions) == 20


def test_geojson_classes_tiles_by_phenotype(trained, tmp_path: Path):
    settings = PhenotypeSettings(
        cluster=ClusterSettings(k=3), map_tiles=0, slide_maps=0, geojson=True
    )
    atlas = phenotype_atlas(
        trained["model"], trained["features"], trained["clinical"], tmp_path / "a", settings,
        phenotypes=trained["root"] / "atlas",
    )  # fmt: skip
    collection = json.loads((tmp_path / "a" / "geojson" / "s000.geojson").read_text())
    got = [f["properties"]["classification"]["name"] for f in collection["features"]]
    rows = atlas.tiles.slide == atlas.tiles.slide_ids.index("s000")
    assert got == [f"P{int(p)}" for p in atlas.tiles.phenotype[rows]]


def test_report_has_a_phenotypes_section(trained, tmp_path: Path):
    from mil_crcrs.stats.report.build import build_report
    from mil_crcrs.stats.report.settings import ReportSettings

    model_dir = trained["root"] / "model"
    clinical = pd.read_csv(trained["clinical"])
    clinical["age"] = np.random.default_rng(0).normal(60, 10, len(clinical)).round()
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    settings = ReportSettings(covariates=("age",), horizons_years=(0.1,), n_bootstrap=0)
    report = build_report(
        model_dir / "oof_predictions.csv",
        tmp_path / "clinical.csv",
        tmp_path / "report",
        settings,
        phenotypes=[trained["root"] / "atlas"],
    )
    page = report.html.read_text()
    assert "<h2>Phenotypes</h2>" in page and "hr_per_sd" in page
    assert len(report.tables["phenotypes"]) == 3
    with pytest.raises(InputError, match="phenotypes.csv: no such file"):
        build_report(
            model_dir / "oof_predictions.csv", tmp_path / "clinical.csv", tmp_path / "r2",
            settings, phenotypes=[tmp_path],
        )  # fmt: skip


# -- the command and its bad inputs ---------------------------------------------------------------


def _args(trained, out, *extra):
    root = trained["root"]
    return ["phenotypes", "--model", root / "model", "--features", trained["features"],
            "--clinical", trained["clinical"], "--out", out, "--device", "cpu", *extra]  # fmt: skip


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    leftovers = [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert not [p for p in leftovers if p.name != f".{out.name}.lock"]  # the one-writer lock


def test_cli_runs_and_logs(trained, tmp_path: Path):
    out = tmp_path / "atlas"
    result = run(*_args(trained, out, "--k", "3", "--slide-maps", "1", "--map-tiles", "0"))
    assert result.exit_code == 0, result.output
    assert "3 phenotypes over" in result.stdout and (out / "run.log").is_file()
    assert "no slides given" in result.stderr


def test_k_larger_than_the_tiles(trained, tmp_path: Path):
    out = tmp_path / "atlas"
    result = run(*_args(trained, out, "--k", "100000"))
    assert_one_line_error(result, "--k", "100000", "tiles")
    _nothing_written(out)


def test_features_of_another_encoder(trained, tmp_path: Path):
    other, clinical = write_cohort(tmp_path / "other", n=6, encoder="other")
    out = tmp_path / "atlas"
    root = trained["root"]
    result = run("phenotypes", "--model", root / "model", "--features", other, "--clinical",
                 clinical, "--out", out)  # fmt: skip
    assert_one_line_error(result, "encoder", "'other'")
    _nothing_written(out)


def test_phenotypes_of_another_encoder(trained, tmp_path: Path):
    x = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    fit_phenotypes(x, ClusterSettings(k=2), encoder="other").save(tmp_path / "ph")
    out = tmp_path / "atlas"
    result = run(*_args(trained, out, "--phenotypes", tmp_path / "ph"))
    assert_one_line_error(result, "phenotypes were fitted on 'other'")
    _nothing_written(out)


def test_slides_missing_for_some_patients(trained, tmp_path: Path):
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "s000.tiff").write_bytes(b"not read before the check")
    out = tmp_path / "atlas"
    result = run(*_args(trained, out, "--slides", slides))
    assert_one_line_error(result, "no slide file for 35 of the cohort's 36 slides", "s001")
    _nothing_written(out)


def test_out_may_not_be_the_reused_phenotypes(trained):
    atlas = trained["root"] / "atlas"
    before = (atlas / "phenotypes.npz").read_bytes()
    result = run(*_args(trained, atlas, "--phenotypes", atlas))
    assert_one_line_error(result, "--out is the input --phenotypes")
    assert (atlas / "phenotypes.npz").read_bytes() == before
    model_dir = trained["root"] / "model"
    assert_one_line_error(run(*_args(trained, model_dir)), "--out is the input --model")
    assert not (model_dir / "phenotypes.csv").exists()


def test_a_failing_run_leaves_an_earlier_atlas_whole(trained, tmp_path: Path, monkeypatch):
    import mil_crcrs.phenotypes.outputs as outputs

    out = tmp_path / "atlas"
    phenotype_atlas(trained["model"], trained["features"], trained["clinical"], out, FAST)
    before = sorted(p.name for p in out.iterdir())

    def broken(*args, **kwargs):
        raise RuntimeError("killed while drawing")

    monkeypatch.setattr(outputs, "forest_figure", broken)
    with pytest.raises(RuntimeError):
        phenotype_atlas(trained["model"], trained["features"], trained["clinical"], out, FAST)
    assert sorted(p.name for p in out.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".atlas.")]


# -- planted truth (benchmarks/phenotypes_planted.py) ---------------------------------------------


def _planted_script():
    """benchmarks/phenotypes_planted.py, loaded as its benchmark tests load scripts."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "phenotypes_planted.py"
    spec = importlib.util.spec_from_file_location("bench_phenotypes_planted", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_planted_recovery_by_hand():
    from types import SimpleNamespace

    planted_recovery = _planted_script().planted_recovery

    phenotype = np.array([1, 1, 1, 2, 2, 2, 2, 3])
    truth = np.array([0, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    table = pd.DataFrame(
        {"phenotype": [1, 2, 3], "contribution_rank": [3, 1, 2],
         "hr_per_sd": [0.8, 2.0, 2.5], "fdr": [0.5, 0.01, 0.2]}
    )  # fmt: skip
    atlas = SimpleNamespace(
        tiles=SimpleNamespace(phenotype=phenotype), phenotypes=SimpleNamespace(k=3), table=table
    )
    got = planted_recovery(atlas, truth)
    assert got["precision"] == 0.75 and got["recall"] == 0.75
    assert got["contribution_rank"] == 1 and got["hr_rank"] == 2 and got["fdr"] == 0.01


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_the_planted_phenotype_carries_the_risk_on_simulated_cohorts(tmp_path: Path, seed: int):
    got = _planted_script().run_simulated(seed, tmp_path, patients=120)
    assert got["precision"] >= 0.8 and got["recall"] >= 0.8, got
    assert got["contribution_rank"] == 1 and got["hr_rank"] == 1 and got["fdr"] < 0.05, got
