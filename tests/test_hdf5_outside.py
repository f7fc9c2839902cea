"""No HDF5 file the tool opens can make it read a byte of another file.

HDF5 can point outside a file three ways: an external link, a virtual dataset, and external raw
storage. Each is written here the way h5py writes it, in a feature file's ``features``, in its
``coords``, deep in a group and in a CLAM/TRIDENT patch file; every reader refuses the file in
one line naming it, and ``crcrs predict`` exits 2 without scoring the other file's bytes.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from mil_crcrs.data._open import open_h5, outside_reference
from mil_crcrs.data.store import FeatureStore, read_bag, read_coords_file, read_info
from mil_crcrs.errors import InputError
from tests.helpers import assert_one_line_error, grid_coords, make_meta, run

N, DIM = 5, 4


def _secret(tmp_path: Path) -> Path:
    """A file outside the feature folder: raw bytes, and an HDF5 file holding a dataset."""
    raw = tmp_path / "outside" / "secret.bin"
    raw.parent.mkdir(exist_ok=True)
    raw.write_bytes(np.full(N * DIM, 1e4, dtype=np.float32).tobytes())
    with h5py.File(tmp_path / "outside" / "secret.h5", "w") as f:
        f["data"] = np.full((N, DIM), 1e4, dtype=np.float32)
        f["xy"] = grid_coords(N, 512)
    return raw


def _point_outside(ds_name: str, how: str, f: h5py.File, outside: Path) -> None:
    """Make ``f[ds_name]`` read from the files in ``outside`` by ``how``."""
    other = str(outside / "secret.h5")
    source = "xy" if ds_name.endswith("coords") else "data"
    shape, dtype = ((N, 2), "int64") if source == "xy" else ((N, DIM), "float32")
    if how == "external link":
        f[ds_name] = h5py.ExternalLink(other, source)
    elif how == "virtual dataset":
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[:] = h5py.VirtualSource(other, source, shape=shape)
        f.create_virtual_dataset(ds_name, layout)
    else:  # external raw storage
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        f.create_dataset(
            ds_name, shape=shape, dtype=dtype, external=[(str(outside / "secret.bin"), 0, size)]
        )


def _feature_file(path: Path, how: str, which: str) -> Path:
    """One of our feature files whose dataset ``which`` reads from another file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        meta = make_meta(path.stem)
        for name, data in (
            ("features", np.zeros((N, DIM), np.float32)),
            ("coords", grid_coords(N, 512)),
        ):
            if name == which:
                _point_outside(name, how, f, path.parent.parent / "outside")
            else:
                f[name] = data
        if which == "group/deep":
            f.create_group("group")
            _point_outside("group/deep", how, f, path.parent.parent / "outside")
        from mil_crcrs.data._h5 import _meta_attrs

        f.attrs.update(_meta_attrs(meta, DIM))
    return path


HOW = ["external link", "virtual dataset", "external raw storage"]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("which", ["features", "coords", "group/deep"])
def test_a_feature_file_that_reads_another_file_is_refused(tmp_path, how, which):
    _secret(tmp_path)
    path = _feature_file(tmp_path / "features" / "s1.h5", how, which)
    # h5py itself would read the other file's bytes: the trap is real.
    if which != "group/deep":
        with h5py.File(path, "r") as f:
            assert float(np.asarray(f[which][...]).max()) >= 512
    for read in (read_info, read_bag):
        with pytest.raises(InputError) as err:
            read(path)
        message = str(err.value)
        assert str(path) in message and "other files" in message
        assert len(message.splitlines()) == 1
    with pytest.raises(InputError, match="other files"):
        FeatureStore(path.parent).load("s1")


@pytest.mark.parametrize("how", HOW)
def test_a_patch_file_that_reads_another_file_is_refused(tmp_path, how):
    _secret(tmp_path)
    path = tmp_path / "patches" / "s1.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        _point_outside("coords", how, f, tmp_path / "outside")
    with pytest.raises(InputError, match="other files"):
        read_coords_file(path)


def test_soft_links_inside_the_file_are_still_read(tmp_path, write_features):
    path = write_features("s1", n=N, dim=DIM)
    with h5py.File(path, "a") as f:
        f["alias"] = h5py.SoftLink("/features")
    with open_h5(path) as f:
        assert outside_reference(f) is None
    assert read_bag(path).features.shape == (N, DIM)


def test_predict_refuses_a_feature_file_that_reads_another_file(tmp_path, tiny_model):
    _secret(tmp_path)
    features = tmp_path / "features"
    for i in range(12):
        src = tiny_model / "features" / f"p{i}.h5"
        (features / src.name).parent.mkdir(exist_ok=True)
        (features / src.name).write_bytes(src.read_bytes())
    hostile = _feature_file(features / "p3.h5", "external raw storage", "features")
    model_and_features = ["--model", tiny_model / "model", "--features", features]
    result = run("predict", *model_and_features, "--out", tmp_path / "pred.csv", "--device", "cpu")
    assert_one_line_error(result, str(hostile), "other files")
    assert not (tmp_path / "pred.csv").exists()
