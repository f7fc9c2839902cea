"""Feature files: our format, CLAM's and TRIDENT's layouts, lazy cohort access, bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import mil_crcrs
from mil_crcrs.data.store import (
    FORMAT_VERSION,
    LAYOUT_CLAM_H5,
    LAYOUT_CLAM_PT,
    LAYOUT_OURS,
    LAYOUT_TRIDENT,
    FeatureStore,
    FeatureWriter,
    read_bag,
    read_info,
    write_bag,
)
from mil_crcrs.errors import InputError
from tests.helpers import grid_coords, make_meta


def _h5(path: Path, datasets: dict[str, np.ndarray], attrs: dict | None = None) -> Path:
    """Write a bare HDF5 file (a peer's layout, or a broken one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
        f.attrs.update(attrs or {})
    return path


# --------------------------------------------------------------------------------------------
# Our format


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_our_format_round_trip_keeps_values_and_attributes(tmp_path, dtype):
    meta = make_meta("slide-A", encoder="uni_v1")
    features = np.linspace(-2, 2, 6 * 3, dtype=np.float32).reshape(6, 3)
    coords = grid_coords(6, step=512).astype(np.int32)  # int32 in, int64 on disk
    path = write_bag(tmp_path / "slide-A.h5", features, coords, meta, dtype=dtype)

    with h5py.File(path, "r") as f:
        a = dict(f.attrs)
        assert f["features"].dtype == np.dtype(dtype)
        assert f["coords"].dtype == np.int64
    assert a["format_version"] == FORMAT_VERSION
    assert a["slide_id"] == "slide-A"
    assert a["encoder"] == "uni_v1"
    assert a["feature_dim"] == 3
    assert (a["tile_size_px"], a["tile_size_level0"]) == (256, 512)
    assert (a["target_mpp"], a["slide_mpp"]) == (0.5, 0.25)
    assert (a["level0_width"], a["level0_height"]) == (40_000, 30_000)
    assert a["settings_hash"] == "abc123"
    assert a["package_version"] == mil_crcrs.__version__
    assert json.loads(a["settings"]) == {"target_mpp": 0.5, "tile_size_px": 256}

    bag = read_bag(path)
    assert bag.features.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(bag.features, features.astype(dtype))
    assert bag.coords.dtype == np.int64
    np.testing.assert_array_equal(bag.coords, coords)
    info = bag.info
    assert (info.layout, info.slide_id, info.encoder) == (LAYOUT_OURS, "slide-A", "uni_v1")
    assert (info.n_tiles, info.feature_dim, info.dtype) == (6, 3, dtype)
    assert (info.tile_size_px, info.tile_size_level0, info.level) == (256, 512, 0)
    assert (info.target_mpp, info.slide_mpp) == (0.5, 0.25)
    assert (info.level0_width, info.level0_height) == (40_000, 30_000)
    assert info.settings_hash == "abc123" and info.format_version == FORMAT_VERSION
    assert read_info(path) == info


def test_read_bag_casts_on_request(write_features):
    path = write_features("s1", dtype="float32")
    assert read_bag(path, dtype="float16").features.dtype == np.float16
    assert read_bag(path).features.dtype == np.float32


def test_writer_streams_batches_in_order(tmp_path):
    path = tmp_path / "s.h5"
    with FeatureWriter(path, make_meta("s"), dim=2, dtype="float32") as writer:
        writer.append(np.zeros((3, 2)), grid_coords(3, 512))
        writer.append(np.ones((2, 2)), grid_coords(5, 512)[3:])
    bag = read_bag(path)
    np.testing.assert_array_equal(bag.features[:, 0], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(bag.coords, grid_coords(5, 512))


def test_exception_inside_writer_leaves_no_file_and_no_temp_file(tmp_path):
    path = tmp_path / "out" / "s.h5"
    with pytest.raises(RuntimeError, match="encoder crashed"):
        with FeatureWriter(path, make_meta("s"), dim=2) as writer:
            writer.append(np.zeros((3, 2)), grid_coords(3, 512))
            raise RuntimeError("encoder crashed")
    assert list(path.parent.iterdir()) == []


def test_exception_keeps_an_existing_file_untouched(write_features):
    path = write_features("s1", n=5)
    with pytest.raises(RuntimeError):
        with FeatureWriter(path, make_meta("s1"), dim=4) as writer:
            writer.append(np.zeros((1, 4)), grid_coords(1, 512))
            raise RuntimeError
    assert read_info(path).n_tiles == 5
    assert [p.name for p in path.parent.iterdir()] == ["s1.h5"]


def test_writer_with_no_tiles_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="no tiles"):
        with FeatureWriter(tmp_path / "s.h5", make_meta("s"), dim=2):
            pass
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_nan_features_naming_the_file(tmp_path):
    path = tmp_path / "s.h5"
    features = np.array([[0.0, np.nan]])
    with pytest.raises(InputError, match="NaN") as err:
        write_bag(path, features, grid_coords(1, 512), make_meta("s"))
    assert str(path) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_other_dtypes(tmp_path):
    with pytest.raises(InputError, match="float16 or float32"):
        FeatureWriter(tmp_path / "s.h5", make_meta("s"), dim=2, dtype="float64")


def test_newer_format_version_is_refused(write_features):
    path = write_features("s1")
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(InputError, match="newer") as err:
        read_info(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------------------------
# CLAM


def test_clam_h5_files_are_read_without_attributes(tmp_path):
    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    coords = np.array([[0, 0], [256, 0], [0, 256]], dtype=np.int32)
    path = _h5(tmp_path / "h5_files" / "TCGA-01.h5", {"features": features, "coords": coords})

    bag = read_bag(path)
    np.testing.assert_array_equal(bag.features, features)
    assert bag.coords.dtype == np.int64
    np.testing.assert_array_equal(bag.coords, coords)
    info = bag.info
    assert (info.layout, info.slide_id, info.n_tiles, info.feature_dim) == (
        LAYOUT_CLAM_H5,
        "TCGA-01",
        3,
        4,
    )
    assert info.encoder is None and info.tile_size_px is None and info.target_mpp is None


def test_clam_h5_keeps_patch_attributes_when_present(tmp_path):
    path = _h5(
        tmp_path / "s.h5",
        {"features": np.zeros((2, 3), np.float32), "coords": np.zeros((2, 2), np.int64)},
    )
    with h5py.File(path, "a") as f:
        f["coords"].attrs.update({"patch_size": 256, "patch_level": 0})
    info = read_info(path)
    assert (info.layout, info.tile_size_px, info.level, info.tile_size_level0) == (
        LAYOUT_CLAM_H5,
        256,
        0,
        256,
    )


def _clam_folder(root: Path, slide: str = "s1", n: int = 3, dim: int = 4) -> np.ndarray:
    features = np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    coords = grid_coords(n, 256).astype(np.int32)
    _h5(root / "h5_files" / f"{slide}.h5", {"features": features, "coords": coords})
    (root / "pt_files").mkdir(parents=True, exist_ok=True)
    torch.save(torch.from_numpy(features), root / "pt_files" / f"{slide}.pt")
    return features


def test_clam_pt_file_takes_coords_from_sibling_h5_files(tmp_path):
    features = _clam_folder(tmp_path / "clam")
    bag = read_bag(tmp_path / "clam" / "pt_files" / "s1.pt")
    np.testing.assert_array_equal(bag.features, features)
    np.testing.assert_array_equal(bag.coords, grid_coords(3, 256))
    assert bag.coords.dtype == np.int64
    assert (bag.info.layout, bag.info.slide_id, bag.info.has_coords) == (LAYOUT_CLAM_PT, "s1", True)


def test_clam_pt_file_alone_has_no_coords(tmp_path):
    path = tmp_path / "pt_files" / "s1.pt"
    path.parent.mkdir()
    torch.save(torch.ones(4, 2), path)
    bag = read_bag(path)
    assert bag.coords is None and not bag.info.has_coords
    assert bag.features.shape == (4, 2)


def test_store_on_a_clam_folder_prefers_h5_files(tmp_path):
    _clam_folder(tmp_path / "clam", "s1")
    store = FeatureStore(tmp_path / "clam")
    assert store.slide_ids == ["s1"]
    assert store.path("s1").suffix == ".h5"
    pt_store = FeatureStore(tmp_path / "clam" / "pt_files")
    assert pt_store.load("s1").coords is not None


def test_pt_file_that_is_not_a_tensor_file(tmp_path):
    path = tmp_path / "s1.pt"
    path.write_text("not a tensor")
    with pytest.raises(InputError, match="not a readable torch") as err:
        read_bag(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------------------------
# TRIDENT


def _trident_file(path: Path, coords_attrs: dict, features_attrs: dict, dtype=np.float32) -> Path:
    features = np.arange(8, dtype=dtype).reshape(4, 2)
    coords = grid_coords(4, 512)
    _h5(path, {"features": features, "coords": coords})
    with h5py.File(path, "a") as f:
        f["features"].attrs.update(features_attrs)
        f["coords"].attrs.update(coords_attrs)
    return path


TRIDENT_COORDS = {
    "patch_size": 256,
    "patch_size_level0": 512,
    "level0_magnification": 40,
    "target_magnification": 20,
    "overlap": 0,
    "name": "slide-7",
    "savetodir": "/data/20x_256px_0px_overlap/patches",
    "level0_width": 50_000,
    "level0_height": 20_000,
}


def test_trident_file_exposes_what_its_attributes_know(tmp_path):
    path = _trident_file(
        tmp_path / "features_uni_v1" / "slide-7.h5",
        TRIDENT_COORDS,
        {"name": "slide-7", "savetodir": "/data/features_uni_v1", "encoder": "uni_v1"},
    )
    bag = read_bag(path)
    info = bag.info
    # TRIDENT's uni_v1 is our uni (trident.patch_encoder_models.load)
    assert (info.layout, info.slide_id, info.encoder) == (LAYOUT_TRIDENT, "slide-7", "uni")
    assert (info.tile_size_px, info.tile_size_level0, info.magnification) == (256, 512, 20.0)
    # 40x level 0 is ~0.25 mpp, 20x target ~0.5 mpp (TRIDENT's mpp = 10 / magnification)
    assert info.slide_mpp == pytest.approx(0.25) and info.target_mpp == pytest.approx(0.5)
    assert (info.level0_width, info.level0_height) == (50_000, 20_000)
    np.testing.assert_array_equal(bag.coords, grid_coords(4, 512))


def test_trident_none_strings_and_json_values_become_unknown(tmp_path):
    coords_attrs = {
        **TRIDENT_COORDS,
        "name": "None",
        "level0_magnification": "None",
        "level0_width": "None",
        "patch_size": "256",  # numbers stored as strings are still read
        "target_magnification": json.dumps({"value": 20}),  # a JSON dict is not a number
    }
    path = _trident_file(
        tmp_path / "features_conch" / "slide-8.h5",
        coords_attrs,
        {"name": "None", "savetodir": "None", "encoder": "None"},
        dtype=np.float16,
    )
    info = read_info(path)
    assert info.layout == LAYOUT_TRIDENT
    assert info.slide_id == "slide-8"  # 'None' name falls back to the file stem
    assert info.encoder == "conch"  # 'None' in the file: named by its features_<encoder> folder
    assert info.slide_mpp is None and info.level0_width is None
    assert info.magnification is None and info.target_mpp is None
    assert info.tile_size_px == 256 and info.level0_height == 20_000
    assert read_bag(path).features.dtype == np.float16


def test_trident_layout_is_detected_from_coords_attributes_alone(tmp_path):
    path = _trident_file(tmp_path / "s.h5", TRIDENT_COORDS, {})
    assert read_info(path).layout == LAYOUT_TRIDENT


# --------------------------------------------------------------------------------------------
# FeatureStore


def test_store_is_lazy_keyed_by_stem_and_casts(write_features, tmp_path):
    write_features("b", dtype="float32")
    write_features("a", dtype="float32")
    (tmp_path / "features" / "broken.h5").write_text("not hdf5")  # opened only when asked for
    (tmp_path / "features" / "notes.txt").write_text("ignored")
    store = FeatureStore(tmp_path / "features", dtype="float16")
    assert store.slide_ids == ["a", "b", "broken"] and len(store) == 3
    assert "a" in store and "notes" not in store
    bag = store.load("a")
    assert bag.features.dtype == np.float16
    np.testing.assert_array_equal(bag.features, np.arange(20).reshape(5, 4))
    assert store.info("b").n_tiles == 5
    with pytest.raises(InputError, match="broken.h5"):
        store.load("broken")


def test_store_takes_a_list_of_files(write_features):
    paths = [write_features("a"), write_features("b", folder="other")]
    assert FeatureStore(paths).slide_ids == ["a", "b"]


def test_store_unknown_slide_and_missing_folder(tmp_path, write_features):
    write_features("a")
    with pytest.raises(InputError, match="slide 'zz'"):
        FeatureStore(tmp_path / "features").load("zz")
    with pytest.raises(InputError, match="nowhere"):
        FeatureStore(tmp_path / "nowhere")


def test_check_consistent_returns_dim_and_encoder(write_features, tmp_path):
    write_features("a", dim=4, encoder="uni_v1")
    write_features("b", dim=4, encoder="uni_v1")
    assert FeatureStore(tmp_path / "features").check_consistent() == (4, "uni_v1")


def test_different_feature_dims_in_one_cohort(write_features, tmp_path):
    write_features("a", dim=4)
    bad = write_features("b", dim=6)
    with pytest.raises(InputError, match="feature dim 6 differs from 4") as err:
        FeatureStore(tmp_path / "features").check_consistent()
    assert str(bad) in str(err.value)


def test_different_encoders_in_one_cohort(write_features, tmp_path):
    write_features("a", encoder="uni_v1")
    write_features("b", encoder="conch_v1")
    with pytest.raises(InputError, match="encoder 'conch_v1' differs from 'uni_v1'"):
        FeatureStore(tmp_path / "features").check_consistent(["a", "b"])


def test_empty_folder_has_nothing_to_check(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no feature files"):
        FeatureStore(tmp_path / "empty").check_consistent()


# --------------------------------------------------------------------------------------------
# Bad files: one InputError naming the file


def _assert_names(err: pytest.ExceptionInfo, path: Path) -> None:
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "s.h5"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not an hdf5 file")
    with pytest.raises(InputError, match="not a readable HDF5") as err:
        read_bag(path)
    _assert_names(err, path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such feature file"):
        read_info(tmp_path / "nope.h5")


@pytest.mark.parametrize("present, absent", [("coords", "features"), ("features", "coords")])
def test_missing_dataset(tmp_path, present, absent):
    shape = (3, 2)
    path = _h5(tmp_path / "s.h5", {present: np.zeros(shape, np.float32)})
    with pytest.raises(InputError, match=f"missing dataset '{absent}'") as err:
        read_bag(path)
    _assert_names(err, path)


def test_missing_dataset_in_our_format(write_features):
    path = write_features("s1")
    with h5py.File(path, "a") as f:
        del f["coords"]
    with pytest.raises(InputError, match="missing dataset 'coords'") as err:
        read_info(path)
    _assert_names(err, path)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])  # float16 is tested by its bits
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_features(tmp_path, bad, dtype):
    features = np.ones((4, 3), dtype)
    features[2, 1] = bad
    path = _h5(tmp_path / "s.h5", {"features": features, "coords": np.zeros((4, 2), np.int32)})
    with pytest.raises(InputError, match="NaN or inf .*tile 2") as err:
        read_bag(path)
    _assert_names(err, path)


def test_float16_extremes_are_finite(tmp_path):
    features = np.array([[65504, -65504, 6e-8], [0, -0.0, 1]], np.float16)
    path = _h5(tmp_path / "s.h5", {"features": features, "coords": np.zeros((2, 2), np.int32)})
    np.testing.assert_array_equal(read_bag(path).features, features)


def test_nan_features_in_a_pt_file(tmp_path):
    path = tmp_path / "s.pt"
    torch.save(torch.tensor([[0.0, float("nan")]]), path)
    with pytest.raises(InputError, match="NaN or inf") as err:
        read_bag(path)
    _assert_names(err, path)


def test_coords_and_features_of_different_lengths(tmp_path):
    path = _h5(
        tmp_path / "s.h5",
        {"features": np.zeros((5, 3), np.float32), "coords": np.zeros((4, 2), np.int32)},
    )
    with pytest.raises(InputError, match="'coords' has 4 rows but 'features' has 5") as err:
        read_info(path)
    _assert_names(err, path)


def test_pt_and_sibling_coords_of_different_lengths(tmp_path):
    root = tmp_path / "clam"
    _clam_folder(root, "s1", n=3)
    torch.save(torch.zeros(5, 4), root / "pt_files" / "s1.pt")
    with pytest.raises(InputError, match="'coords' has 3 rows but 'features' has 5"):
        read_bag(root / "pt_files" / "s1.pt")


def test_zero_tiles(tmp_path):
    # TRIDENT writes an empty slide as float32 (0, D).
    path = _h5(
        tmp_path / "s.h5",
        {"features": np.zeros((0, 8), np.float32), "coords": np.zeros((0, 2), np.int64)},
    )
    with pytest.raises(InputError, match="zero tiles") as err:
        read_bag(path)
    _assert_names(err, path)


def test_wrongly_shaped_and_non_float_datasets(tmp_path):
    one_d = _h5(
        tmp_path / "a.h5", {"features": np.zeros(3, np.float32), "coords": np.zeros((3, 2))}
    )
    with pytest.raises(InputError, match="must be 2-D"):
        read_info(one_d)
    ints = _h5(
        tmp_path / "b.h5", {"features": np.zeros((3, 2), np.int32), "coords": np.zeros((3, 2))}
    )
    with pytest.raises(InputError, match="floating point"):
        read_info(ints)


# --------------------------------------------------------------------------------------------
# Import hygiene


HEAVY = ("openslide", "timm", "captum", "matplotlib")

# One fresh interpreter (imports cost seconds): the package, then every module of the library,
# so a stray top-level import anywhere is caught.
IMPORT_CHECK = f"""
import importlib, json, pkgutil, sys
loaded = lambda: [m for m in {HEAVY!r} if m in sys.modules]
import mil_crcrs
after_package = loaded()
for module in pkgutil.walk_packages(mil_crcrs.__path__, "mil_crcrs."):
    importlib.import_module(module.name)
print(json.dumps({{"import mil_crcrs": after_package, "every module": loaded()}}))
"""


def test_importing_the_library_does_not_import_heavy_packages():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"import mil_crcrs": [], "every module": []}
