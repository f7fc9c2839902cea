"""Patient bags (a patient's slides joined) and padded batches of bags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mil_crcrs.data.bags import PatientBag, PatientBags, collate, grid_positions
from mil_crcrs.data.cohort import read_cohort
from mil_crcrs.data.store import FeatureStore
from mil_crcrs.errors import InputError
from tests.helpers import grid_coords


@pytest.fixture
def cohort_and_store(write_features, tmp_path):
    # p1 has two slides (5 and 3 tiles), p2 one (6 tiles); tile_size_level0 is 512.
    write_features("p1-a", n=5, offset=0)
    write_features("p1-b", n=3, offset=100)
    write_features("p2-a", n=6, offset=200)
    table = pd.DataFrame(
        {
            "patient_id": ["p1", "p1", "p2"],
            "slide_id": ["p1-a", "p1-b", "p2-a"],
            "time": [10, 10, 20],
            "event": [1, 1, 0],
        }
    )
    return read_cohort(table), FeatureStore(tmp_path / "features")


def test_a_multi_slide_patient_is_one_concatenated_bag(cohort_and_store):
    cohort, store = cohort_and_store
    bags = PatientBags(cohort, store)
    assert len(bags) == 2 and (bags.feature_dim, bags.encoder) == (4, "toy")
    bag = bags[0]
    assert bag.patient_id == "p1" and bag.slide_ids == ("p1-a", "p1-b") and bag.n_tiles == 8
    expected = np.concatenate([np.arange(20).reshape(5, 4), 100 + np.arange(12).reshape(3, 4)])
    np.testing.assert_array_equal(bag.features, expected)
    np.testing.assert_array_equal(bag.tile_slide, [0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(
        bag.coords, np.concatenate([grid_coords(5, 512), grid_coords(3, 512)])
    )
    assert [b.patient_id for b in bags] == ["p1", "p2"]


def test_slides_of_one_patient_sit_side_by_side_on_the_grid(cohort_and_store):
    cohort, store = cohort_and_store
    grid = PatientBags(cohort, store)[0].grid
    # slide a: 5 tiles on a 4-wide grid (cols 0..3, rows 0..1); slide b starts after one
    # empty column, at col 3 + 2 = 5.
    first = [[0, 0], [1, 0], [2, 0], [3, 0], [0, 1]]
    second = [[5, 0], [6, 0], [7, 0]]
    np.testing.assert_array_equal(grid, first + second)
    assert grid.dtype == np.int64


def test_cache_keeps_bags_once_read(cohort_and_store):
    cohort, store = cohort_and_store
    cached, fresh = PatientBags(cohort, store, cache=True), PatientBags(cohort, store)
    assert cached[1] is cached[1]
    assert fresh[1] is not fresh[1]
    np.testing.assert_array_equal(fresh[1].features, cached[1].features)


def test_inconsistent_feature_dims_are_caught_up_front(write_features, tmp_path):
    write_features("a", dim=4)
    write_features("b", dim=5)
    table = pd.DataFrame({"patient_id": ["a", "b"], "time": [1, 2], "event": [1, 0]})
    with pytest.raises(InputError, match="feature dim"):
        PatientBags(read_cohort(table), FeatureStore(tmp_path / "features"))


def test_grid_positions_infer_the_step_from_the_coords():
    coords = np.array([[1000, 2000], [1224, 2000], [1000, 2224], [1672, 2448]])
    np.testing.assert_array_equal(grid_positions(coords), [[0, 0], [1, 0], [0, 1], [3, 2]])
    np.testing.assert_array_equal(
        grid_positions(coords, step=448), [[0, 0], [0, 0], [0, 0], [1, 1]]
    )
    assert grid_positions(np.zeros((0, 2), np.int64)).shape == (0, 2)


# --------------------------------------------------------------------------------------------
# collate


def _bag(n: int, dim: int = 3, start: float = 0.0) -> PatientBag:
    features = (start + np.arange(n * dim)).reshape(n, dim).astype(np.float16)
    coords = grid_coords(n, 512)
    return PatientBag(
        patient_id=f"p{n}",
        features=features,
        coords=coords,
        grid=grid_positions(coords, 512),
        slide_ids=("s",),
        tile_slide=np.zeros(n, np.int64),
    )


def test_collate_pads_with_zeros_and_masks_the_padding():
    short, long = _bag(2), _bag(5, start=50)
    batch = collate([short, long])
    assert batch.features.shape == (2, 5, 3) and batch.features.dtype == torch.float32
    assert batch.mask.dtype == torch.bool and batch.grid.dtype == torch.long
    assert batch.mask.tolist() == [[True, True, False, False, False], [True] * 5]
    np.testing.assert_array_equal(batch.features[0, :2].numpy(), short.features)
    assert batch.features[0, 2:].abs().sum() == 0 and batch.grid[0, 2:].abs().sum() == 0
    np.testing.assert_array_equal(batch.features[1].numpy(), long.features)
    np.testing.assert_array_equal(batch.grid[1].numpy(), long.grid)


def test_collate_caps_tiles_with_a_reproducible_subsample():
    big, small = _bag(40), _bag(3)
    a = collate([big, small], max_tiles=10, rng=np.random.default_rng(7))
    b = collate([big, small], max_tiles=10, rng=np.random.default_rng(7))
    c = collate([big, small], max_tiles=10, rng=np.random.default_rng(8))
    assert a.features.shape == (2, 10, 3)
    assert torch.equal(a.features, b.features) and torch.equal(a.grid, b.grid)
    assert not torch.equal(a.features, c.features)
    # the subset is 10 distinct rows of the bag, in their original order
    rows = a.features[0, :, 0].numpy() / 3
    assert len(set(rows)) == 10 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(a.features[0].numpy(), big.features[rows.astype(int)])
    np.testing.assert_array_equal(a.grid[0].numpy(), big.grid[rows.astype(int)])
    # a bag under the cap is untouched
    assert a.mask[1].tolist() == [True] * 3 + [False] * 7
    np.testing.assert_array_equal(a.features[1, :3].numpy(), small.features)


def test_collate_cap_needs_an_rng():
    with pytest.raises(ValueError, match="rng"):
        collate([_bag(5)], max_tiles=2)
    assert collate([_bag(5)], max_tiles=5).features.shape == (1, 5, 3)  # nothing to cut


def test_bags_without_coords_are_laid_out_in_a_square(tmp_path):
    path = tmp_path / "pt_files" / "x.pt"
    path.parent.mkdir()
    torch.save(torch.ones(5, 2), path)
    table = pd.DataFrame({"patient_id": ["x"], "time": [1], "event": [1]})
    bag = PatientBags(read_cohort(table), FeatureStore(path.parent))[0]
    np.testing.assert_array_equal(bag.coords, -np.ones((5, 2)))
    np.testing.assert_array_equal(bag.grid, [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1]])
