"""Fuzzed feature files: every file is either read as a valid bag or refused in one line.

Hypothesis writes HDF5 files with random feature and coordinate datasets (wrong dtypes, ranks
and shapes, zero tiles, NaN and inf, coords that do not match, a group where a dataset should
be, declared shapes far larger than memory), random attributes (our format with odd versions,
TRIDENT-like ones, arrays and bytes where text is expected), hostile structure (external
links, virtual datasets and external raw storage pointing at files outside the folder, soft
links inside the file, coordinates stored as strings, a group named ``coords``), files
truncated at a random byte, random bytes, and a folder named ``x.h5``. The property:
:func:`read_bag` (and the :class:`FeatureStore` around it) returns ``features`` (n >= 1,
dim >= 1) finite floats with ``coords`` (n, 2) int64, or raises :class:`InputError` with one
line naming the file; a file that points outside itself is always refused. Examples are
derandomized.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.main import cli
from mil_crcrs.data.store import FORMAT_NAME, FeatureStore, read_bag, read_info
from mil_crcrs.errors import InputError

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = ["float16", "float32", "float64", "int32", "uint8", "complex64", "bool", "S3"]
SPECIAL = [np.nan, np.inf, -np.inf, 1e30, -0.0]


@st.composite
def arrays(draw, rank_bias: int = 2) -> np.ndarray:
    rank = draw(st.sampled_from([rank_bias] * 4 + [0, 1, 3]))
    shape = tuple(draw(st.integers(0, 5)) for _ in range(rank))
    dtype = draw(st.sampled_from(DTYPES))
    size = int(np.prod(shape))
    values = np.asarray(draw(st.lists(st.integers(-3, 300), min_size=size, max_size=size)))
    array = values.reshape(shape).astype(dtype)
    if array.dtype.kind == "f" and size and draw(st.booleans()):
        flat = array.reshape(-1)
        flat[draw(st.integers(0, size - 1))] = draw(st.sampled_from(SPECIAL))
    return array


@st.composite
def feature_files(draw) -> dict:
    """A description of one file to write (see :func:`write`)."""
    kind = draw(st.sampled_from(["h5"] * 6 + ["truncated", "bytes", "folder", "huge", "group"]))
    structure = draw(st.sampled_from([None] * 6 + list(STRUCTURES)))
    features = draw(arrays())
    if draw(st.booleans()) and features.ndim == 2:  # coords that fit, mostly
        coords = np.arange(features.shape[0] * 2).reshape(-1, 2) * 256
        coords = coords.astype(draw(st.sampled_from(["int64", "int32", "float32"])))
    else:
        coords = draw(arrays()) if draw(st.booleans()) else None
    attrs = draw(
        st.sampled_from(
            [
                {},
                {"format": FORMAT_NAME, "format_version": 1, "encoder": "toy"},
                {"format": FORMAT_NAME, "format_version": 99},
                {"format": FORMAT_NAME, "format_version": "one"},
                {"format": FORMAT_NAME},
                {"format": b"\xff\xfe", "slide_id": "../x"},
                {"format": FORMAT_NAME, "format_version": np.array([1, 2]), "slide_id": 5},
                {"format": np.zeros(3), "tile_size_px": "big", "target_mpp": b"0.5"},
            ]
        )
    )
    return {
        "kind": kind,
        "structure": structure,
        "features": features,
        "coords": coords,
        "attrs": attrs,
        "cut": draw(st.floats(0.0, 0.99)),
        "noise": draw(st.binary(max_size=64)),
    }


def _secret(folder: Path) -> Path:
    """Files outside the feature folder (``../outside/``) that no reader may take bytes from."""
    folder = folder.parent / "outside"
    folder.mkdir(exist_ok=True)
    path = folder / "secret.h5"
    if not path.exists():
        with h5py.File(path, "w") as f:
            f["data"] = np.full((3, 2), 7.0, np.float32)
        (folder / "secret.bin").write_bytes(np.full(6, 7.0, np.float32).tobytes())
    return path


def _replace(f: h5py.File, name: str) -> None:
    if name in f:
        del f[name]


def _external_link(f: h5py.File, folder: Path) -> None:
    _replace(f, "features")
    f["features"] = h5py.ExternalLink(str(_secret(folder)), "data")


def _virtual(f: h5py.File, folder: Path) -> None:
    _replace(f, "coords")
    layout = h5py.VirtualLayout(shape=(3, 2), dtype="float32")
    layout[:] = h5py.VirtualSource(str(_secret(folder)), "data", shape=(3, 2))
    f.create_virtual_dataset("coords", layout)


def _external_raw(f: h5py.File, folder: Path) -> None:
    raw = _secret(folder).with_suffix(".bin")
    _replace(f, "features")
    f.create_dataset("features", (3, 2), "float32", external=[(str(raw), 0, 24)])


def _soft_link(f: h5py.File, folder: Path) -> None:
    if "coords" in f:  # inside the file: allowed, read as what it points to
        _replace(f, "features")
        f["features"] = h5py.SoftLink("/coords")


def _string_coords(f: h5py.File, folder: Path) -> None:
    _replace(f, "coords")
    f["coords"] = np.array([[b"0", b"256"]] * 3)


def _coords_group(f: h5py.File, folder: Path) -> None:
    _replace(f, "coords")
    f.create_group("coords")


#: Ways a file's structure can be hostile; the first three point outside the file.
STRUCTURES = {
    "external link": _external_link,
    "virtual dataset": _virtual,
    "external raw storage": _external_raw,
    "soft link": _soft_link,
    "string coords": _string_coords,
    "coords group": _coords_group,
}
OUTSIDE = ("external link", "virtual dataset", "external raw storage")


def write(spec: dict, path: Path) -> None:
    """Write the file ``spec`` describes at ``path``."""
    kind = spec["kind"]
    if kind == "folder":
        path.mkdir()
        return
    if kind == "bytes":
        path.write_bytes(spec["noise"])
        return
    with h5py.File(path, "w") as f:
        if kind == "huge":  # declared (10^9, 10^3) float32: 4 TB if read, nothing on disk
            f.create_dataset("features", shape=(10**9, 1000), dtype="float32", chunks=(64, 1000))
            f.create_dataset("coords", shape=(10**9, 2), dtype="int64", chunks=(64, 2))
        elif kind == "group":
            f.create_group("features")
        else:
            f.create_dataset("features", data=spec["features"])
        if spec["coords"] is not None and kind not in ("huge",):
            f.create_dataset("coords", data=spec["coords"])
        f.attrs.update(spec["attrs"])
        if spec.get("structure") and kind in ("h5", "truncated"):
            STRUCTURES[spec["structure"]](f, path.parent)
    if kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * spec["cut"])])


def check_read(path: Path, structure: str | None = None) -> None:
    """The property for one file: read as written, or refused in one line naming it; a file
    that points outside itself is always refused."""
    try:
        bag = read_bag(path)
    except InputError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1 and str(path) in message, message
        return
    assert structure not in OUTSIDE, f"read a {structure}"
    n, dim = bag.features.shape
    assert n >= 1 and dim >= 1 and bag.features.dtype.kind == "f"
    assert np.isfinite(bag.features).all()
    assert bag.coords is not None and bag.coords.shape == (n, 2) and bag.coords.dtype == np.int64
    assert read_info(path).n_tiles == n


@FUZZ
@given(spec=feature_files())
def test_fuzzed_feature_files_are_read_as_valid_bags_or_refused_in_one_line(spec):
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "features"
        folder.mkdir()
        path = folder / "slide.h5"
        write(spec, path)
        check_read(path, spec["structure"])
        store = FeatureStore(folder)  # a folder named x.h5 is not a feature file
        assert store.slide_ids == ([] if spec["kind"] == "folder" else ["slide"])


def test_a_declared_4_tb_dataset_is_refused_without_reading_it(tmp_path):
    write({"kind": "huge", "coords": None, "attrs": {}}, tmp_path / "x.h5")
    with pytest.raises(InputError, match=r"x.h5: .*too large"):
        read_bag(tmp_path / "x.h5")


@settings(FUZZ, max_examples=12)
@given(spec=feature_files())
def test_cli_predict_refuses_bad_feature_files_in_one_line(tiny_model, spec):
    """The CLI contract on a sample: exit 2 and one line naming the file, or a full table."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "slide.h5"
        write(spec, path)
        out = Path(folder) / "predictions.csv"
        args = ["predict", "--model", str(tiny_model / "model"), "--features", str(path)]
        result = CliRunner().invoke(cli, [*args, "--out", str(out), "--device", "cpu"])
        assert "Traceback" not in result.output
        if result.exit_code == 0:
            assert out.is_file()
            return
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
        assert not out.exists()
