"""Every peer's feature files, read by the one reader in store.py, with honest coordinates."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from _peer_files import write_clam, write_slideflow, write_stamp, write_trident_pt

from mil_crcrs.data.bags import PatientBags
from mil_crcrs.data.cohort import cohort_from_slides
from mil_crcrs.data.store import (
    LAYOUT_CLAM_H5,
    LAYOUT_CLAM_PT,
    LAYOUT_SLIDEFLOW,
    LAYOUT_STAMP,
    LAYOUT_TRIDENT,
    FeatureStore,
    ReadSettings,
    read_bag,
    read_info,
)
from mil_crcrs.errors import InputError, SettingError
from tests.helpers import grid_coords

FEATURES = np.arange(6 * 4, dtype=np.float32).reshape(6, 4) / 8  # exact in float16 too
COORDS = grid_coords(6, 512)  # level-0 px, 512-px tiles (256 um at 0.5 mpp)


# --------------------------------------------------------------------------------------------
# STAMP


def test_stamp_file_is_read_with_its_microns_carried_until_the_resolution_is_known(tmp_path):
    path = write_stamp(tmp_path / "ctranspath-1a2b3c", "s1", FEATURES, COORDS, slide_mpp=0.5)
    bag = read_bag(path)
    info = bag.info
    assert (info.layout, info.tool, info.encoder) == (LAYOUT_STAMP, "STAMP 2.2.0", "ctranspath")
    assert (info.dtype, info.n_tiles, info.feature_dim) == ("float16", 6, 4)
    assert (info.tile_size_um, info.tile_size_px, info.settings_hash) == (256.0, 224, "1a2b3c")
    np.testing.assert_array_equal(bag.features, FEATURES)
    # microns, slide resolution unknown: no level-0 coords, and it says why
    assert bag.coords is None and not info.has_coords and info.coords_unit == "um"
    assert "microns" in info.coords_note and "--slide-mpp" in info.coords_note
    np.testing.assert_allclose(bag.coords_native, COORDS * 0.5)
    np.testing.assert_array_equal(bag.level0(slide_mpp=0.5), COORDS)
    # with the resolution: level-0 pixels, and the tile size in them
    known = read_bag(path, settings=ReadSettings(slide_mpp=0.5))
    np.testing.assert_array_equal(known.coords, COORDS)
    assert known.info.has_coords and known.info.tile_size_level0 == 512


def test_old_stamp_files_scale_their_coordinates(tmp_path):
    path = write_stamp(tmp_path, "s1", FEATURES, COORDS, slide_mpp=0.5, old=True)
    bag = read_bag(path, settings=ReadSettings(slide_mpp=0.5))
    assert bag.info.tile_size_um == 256.0 and bag.info.tool == "STAMP"
    np.testing.assert_array_equal(bag.coords, COORDS)


def test_stamp_slide_level_features_are_refused(tmp_path):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("feats", data=np.zeros((1, 8), np.float16))
        f.create_dataset("coords", data=np.zeros((1, 2)))
        f.attrs.update({"feat_type": "slide", "unit": "um", "tile_size_um": 256.0})
    with pytest.raises(InputError, match="slide-level features.*tile-level") as err:
        read_info(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------------------------
# slideflow


def test_slideflow_bag_with_index_and_config(tmp_path):
    path = write_slideflow(tmp_path / "bags", "s1", FEATURES, COORDS, tile_size_level0=512)
    bag = read_bag(path)
    info = bag.info
    assert (info.layout, info.tool, info.encoder) == (LAYOUT_SLIDEFLOW, "slideflow", "ctranspath")
    assert (info.tile_size_px, info.tile_size_um, info.coords_anchor) == (224, 256.0, "centre")
    np.testing.assert_array_equal(bag.features, FEATURES)
    # tile centres, tile size unknown: the top-left corners cannot be placed
    assert bag.coords is None and "tile centres" in info.coords_note
    np.testing.assert_array_equal(bag.coords_native, COORDS + 256)
    for settings in (ReadSettings(tile_size_level0=512), ReadSettings(slide_mpp=0.5)):
        np.testing.assert_array_equal(read_bag(path, settings=settings).coords, COORDS)


def test_slideflow_bag_and_index_of_different_lengths(tmp_path):
    path = write_slideflow(tmp_path, "s1", FEATURES, COORDS)
    np.savez(tmp_path / "s1.index.npz", COORDS[:4])
    with pytest.raises(InputError, match="'coords' has 4 rows but 'features' has 6"):
        read_bag(path)


# --------------------------------------------------------------------------------------------
# CLAM's patches/ and TRIDENT's .pt


def test_clam_tile_size_and_level_come_from_patches_beside(tmp_path):
    write_clam(
        tmp_path / "clam", "s1", FEATURES, COORDS, patch_size=256, patch_level=1, downsample=2.0
    )
    for path, layout in (
        (tmp_path / "clam" / "h5_files" / "s1.h5", LAYOUT_CLAM_H5),
        (tmp_path / "clam" / "pt_files" / "s1.pt", LAYOUT_CLAM_PT),
    ):
        bag = read_bag(path)
        info = bag.info
        assert (info.layout, info.tool) == (layout, "CLAM")
        assert (info.tile_size_px, info.level, info.tile_size_level0) == (256, 1, 512)
        np.testing.assert_array_equal(bag.coords, COORDS)
        assert info.encoder is None


def test_clam_level0_patches_give_the_slide_size(tmp_path):
    write_clam(tmp_path / "clam", "s1", FEATURES, COORDS, patch_size=512)
    info = read_info(tmp_path / "clam" / "pt_files" / "s1.pt")
    assert (info.tile_size_level0, info.level0_width, info.level0_height) == (512, 10_000, 8_000)


def test_without_patches_the_tile_size_can_be_supplied(tmp_path):
    write_clam(tmp_path / "clam", "s1", FEATURES, COORDS, patch_size=None)
    store = FeatureStore(tmp_path / "clam")
    assert store.info("s1").tile_size_level0 is None
    given = FeatureStore(
        tmp_path / "clam", settings=ReadSettings(encoder="uni_v1", tile_size_level0=512)
    )
    # CLAM's name for UNI is read as ours
    assert (given.info("s1").tile_size_level0, given.info("s1").encoder) == (512, "uni")


def test_trident_pt_takes_coords_and_tile_size_from_its_patches_file(tmp_path):
    path = write_trident_pt(tmp_path / "20x_256px_0px_overlap", "s1", FEATURES, COORDS)
    bag = read_bag(path)
    info = bag.info
    assert (info.layout, info.tool, info.tile_size_level0) == (LAYOUT_TRIDENT, "TRIDENT", 512)
    assert info.slide_mpp == pytest.approx(0.25) and info.level0_width == 50_000
    np.testing.assert_array_equal(bag.coords, COORDS)


def test_read_settings_refuse_bad_values_naming_the_setting():
    with pytest.raises(SettingError, match="^tile_size_level0 must be at least 1, got 0$") as info:
        ReadSettings(tile_size_level0=0)
    assert info.value.setting == "tile_size_level0"
    with pytest.raises(SettingError, match="^slide_mpp must be positive, got -0.5$") as info:
        ReadSettings(slide_mpp=-0.5)
    assert info.value.setting == "slide_mpp"


def test_an_encoder_setting_that_contradicts_the_file_is_an_error(tmp_path):
    path = write_stamp(tmp_path, "s1", FEATURES, COORDS)
    with pytest.raises(
        SettingError, match="encoder 'uni' contradicts .*names encoder 'ctranspath'"
    ):
        read_info(path, ReadSettings(encoder="uni"))


@pytest.mark.parametrize("bad", [{"tile_size_level0": 0}, {"slide_mpp": -1.0}])
def test_read_settings_are_checked(bad):
    with pytest.raises(InputError):
        ReadSettings(**bad)


# --------------------------------------------------------------------------------------------
# Bags of files whose coordinates are not level-0 pixels


def test_patient_bags_keep_the_tile_layout_and_say_coords_are_unknown(tmp_path):
    write_stamp(tmp_path / "stamp", "s1", FEATURES, COORDS)
    store = FeatureStore(tmp_path / "stamp")
    bag = PatientBags(cohort_from_slides(["s1"]), store)[0]
    assert (bag.coords == -1).all()
    assert "microns" in bag.coords_notes[0]
    # the grid comes from the micron coordinates: the same layout as the level-0 one
    np.testing.assert_array_equal(bag.grid, COORDS // 512)
