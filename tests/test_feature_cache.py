"""Cached, streamed and device-resident bags train the same model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from mil_crcrs import FitSettings, fit
from mil_crcrs.data.bags import PatientBags, collate
from mil_crcrs.data.cache import BagCache, default_cache_gb, open_training_bags
from mil_crcrs.data.cohort import read_cohort
from mil_crcrs.data.packed import PackedBags
from mil_crcrs.data.store import FeatureStore
from mil_crcrs.runlog import PROGRESS_LOGGER
from mil_crcrs.simulate import SimulationSettings, simulate_cohort
from mil_crcrs.train.batches import eval_batches, iterate_batches

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

SIM = SimulationSettings(
    scenario="prevalence", n_patients=48, tiles_per_slide=(20, 50), dim=16, seed=4
)


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate_cohort(out, SIM)
    return out


def _bags(cohort_dir: Path) -> PatientBags:
    store = FeatureStore(cohort_dir / "features")
    cohort = read_cohort(cohort_dir / "clinical.csv").match_features(store.slide_ids, "error")
    return PatientBags(cohort, store)


@pytest.fixture(scope="module")
def bag_list(cohort_dir) -> list:
    """The cohort's bags, read once."""
    return list(_bags(cohort_dir))


_FITS: dict = {}


def _fit(cohort_dir: Path, **kw):
    """A small fit; each distinct one runs once per session (tests compare pairs of them)."""
    key = (str(cohort_dir), tuple(sorted(kw.items())))
    if key not in _FITS:
        _FITS[key] = _fit_now(cohort_dir, **kw)
    return _FITS[key]


#: The small fit the tests compare paths on; a test's own settings (the GPU test's device) win.
SMALL_FIT = {
    "model_kwargs": {"hidden_dim": 16, "attn_dim": 8, "dropout": 0.1},
    "folds": 2,
    "epochs": 6,
    "batch_size": 8,
    "lr": 1e-2,
    "schedule": "onecycle",
    "inner_val_fraction": 0.0,
    "progress": False,
    "device": "cpu",
    "seed": 1,
}


def _fit_now(cohort_dir: Path, **kw):
    settings = FitSettings(**(SMALL_FIT | kw))
    return fit(cohort_dir / "features", cohort_dir / "clinical.csv", settings)


def _same_weights(a, b) -> bool:
    pairs = [
        (x, y)
        for ma, mb in zip(a.fold_models, b.fold_models, strict=True)
        for x, y in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True)
    ]
    return bool(pairs) and all(torch.equal(x, y) for x, y in pairs)


def test_streamed_bags_train_the_bitwise_same_model_as_cached_bags(cohort_dir):
    """With tile subsampling, so the random streams must line up too."""
    cached = _fit(cohort_dir, max_tiles=24, resident="off")
    streamed = _fit(cohort_dir, max_tiles=24, resident="off", cache_gb=0.0)
    assert _same_weights(cached, streamed)
    np.testing.assert_array_equal(
        cached.oof_predictions["crcrs"], streamed.oof_predictions["crcrs"]
    )
    assert cached.metrics["harrell_c_oof"] > 0.6  # it learned the planted signal


def test_device_resident_bags_train_the_same_model_without_subsampling(cohort_dir):
    """Without max_tiles there is nothing random in the batch: the packed path gathers exactly
    the batches collate pads, so the models are bitwise equal."""
    cached = _fit(cohort_dir, resident="off")
    packed = _fit(cohort_dir, resident="on")
    assert _same_weights(cached, packed)


def test_device_resident_subsampling_keeps_the_c_index_within_noise(cohort_dir):
    """With max_tiles the packed path draws its tile subsets on the device (another random
    stream): same C up to the noise of one 60-patient cohort."""
    cached = _fit(cohort_dir, max_tiles=24, resident="off")
    packed = _fit(cohort_dir, max_tiles=24, resident="on")
    c_cached, c_packed = cached.metrics["harrell_c_oof"], packed.metrics["harrell_c_oof"]
    assert c_packed > 0.6 and abs(c_packed - c_cached) < 0.08


def test_a_bf16_fit_says_so_and_stays_within_noise_of_fp32(cohort_dir, caplog):
    """Precision "auto" is fp32 on the CPU (nothing said); bf16 autocast is logged once."""
    with caplog.at_level(logging.INFO, logger=PROGRESS_LOGGER):
        default = _fit_now(cohort_dir, max_tiles=24, resident="off")
        said_default = [m for m in caplog.messages if "autocast" in m]
        bf16 = _fit_now(cohort_dir, max_tiles=24, resident="off", precision="bf16")
    said = [m for m in caplog.messages if "autocast" in m]
    assert said_default == []
    assert said == ["training steps under bf16 autocast on cpu (precision bf16; fp32 turns it "
                    "off); prediction in fp32"]  # fmt: skip
    c_fp32, c_bf16 = default.metrics["harrell_c_oof"], bf16.metrics["harrell_c_oof"]
    assert c_bf16 > 0.6 and abs(c_bf16 - c_fp32) < 0.08


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_resident_fit_keeps_the_c_index_within_noise(cohort_dir):
    cached = _fit(cohort_dir, max_tiles=24, resident="off")
    gpu = _fit(cohort_dir, max_tiles=24, resident="auto", device="cuda")
    c_cached, c_gpu = cached.metrics["harrell_c_oof"], gpu.metrics["harrell_c_oof"]
    assert c_gpu > 0.6 and abs(c_gpu - c_cached) < 0.08


def test_packed_gather_without_subsampling_equals_collate(bag_list):
    bags = bag_list
    packed = PackedBags(bags, "cpu")
    index = np.array([5, 0, 17])
    batch = packed.gather(torch.as_tensor(index), int(packed.n_tiles[index].max()))
    expected = collate([bags[i] for i in index], dtype=torch.float16)
    assert torch.equal(batch.mask, expected.mask)
    assert torch.equal(batch.grid, expected.grid)
    assert torch.equal(batch.features, expected.features)


def test_packed_subsampling_draws_distinct_tiles_in_order_from_the_right_bag(bag_list):
    bags = bag_list
    packed = PackedBags(bags, "cpu")
    index = np.arange(len(bags))
    gen = torch.Generator().manual_seed(0)
    batch = packed.gather(torch.as_tensor(index), int(packed.n_tiles.max()), 25, gen)
    assert batch.features.shape[1] == 25
    for i, k in enumerate(index):
        full = torch.from_numpy(bags[k].features.astype(np.float16))
        n = min(25, bags[k].n_tiles)
        assert int(batch.mask[i].sum()) == n
        got = batch.features[i, :n]
        # every drawn row is a row of this bag, no row twice, and in tile order
        match = (got[:, None, :] == full[None]).all(-1).float().argmax(1)
        assert torch.equal((got == full[match]).all(-1), torch.ones(n, dtype=torch.bool))
        assert torch.equal(match, match.unique(sorted=True))


def test_streamed_reads_ahead_in_the_announced_order(cohort_dir):
    cache = BagCache(_bags(cohort_dir), budget_gb=0.0, read_ahead=3, log=None)
    assert cache.stats["cached_bags"] == 0 and cache.stats["streamed_bags"] == 48
    order = np.array([7, 3, 9, 1])
    cache.prefetch(order)
    assert [i for i, _ in cache._queue] == [7, 3, 9]
    assert cache[7].patient_id == cache.bags.cohort.patient_ids[7]
    assert [i for i, _ in cache._queue] == [3, 9, 1]  # one consumed, one more read ahead
    assert cache[30].n_tiles == cache.n_tiles[30]  # unannounced access: read now
    cache.close()


def test_cache_budget_splits_cached_and_streamed_and_reports_throughput(cohort_dir):
    lines = []
    bags = _bags(cohort_dir)
    full = BagCache(bags, budget_gb=1.0, log=lines.append)
    per_bag = full.stats["cached_gb"] / len(bags)
    part = BagCache(bags, budget_gb=per_bag * 10.5, log=lines.append)
    assert full.stats["streamed_bags"] == 0
    assert 5 <= part.stats["cached_bags"] <= 15 and part.stats["streamed_bags"] > 0
    assert len(lines) == 2 and "MB/s" in lines[0] and "streamed" in lines[1]
    # cached and streamed bags come back in the same (float16) form
    for i in (0, len(bags) - 1):
        assert part[i].features.dtype == np.float16
        np.testing.assert_array_equal(part[i].features, full[i].features)
    batches = [b for _, b in eval_batches(part, 8)]
    assert sum(int(b.mask.sum()) for b in batches) == int(full.n_tiles.sum())


def test_float32_bags_stay_float32_where_float16_would_blur_them(bag_list):
    from dataclasses import replace

    from mil_crcrs.data.cache import to_cache_dtype

    bag = bag_list[0]
    x = bag.features.astype(np.float32)
    assert to_cache_dtype(replace(bag, features=x)).features.dtype == np.float16
    big = replace(bag, features=x * 1e5)  # beyond float16's range
    assert to_cache_dtype(big).features.dtype == np.float32
    offset = x.copy()
    offset[:, 3] = 51.0 + 0.1 * offset[:, 3]  # float16 steps of 0.03 on a spread of 0.1
    assert to_cache_dtype(replace(bag, features=offset)).features.dtype == np.float32
    packed = PackedBags([bag, replace(bag, features=offset)], "cpu")
    assert packed.features.dtype == torch.float32
    np.testing.assert_array_equal(packed.features[bag.n_tiles :].numpy(), offset)


def test_default_budget_and_device_choice():
    assert default_cache_gb() > 0
    bags = None
    with pytest.raises(ValueError, match="resident"):
        open_training_bags(bags, torch.device("cpu"), resident="always")  # type: ignore[arg-type]


def test_iterate_batches_reads_streamed_bags_ahead(cohort_dir):
    cache = BagCache(_bags(cohort_dir), budget_gb=0.0, log=None)
    c = cache.bags.cohort
    batches = list(
        iterate_batches(cache, np.arange(20), c.time, c.event, 8, np.random.default_rng(0))
    )
    assert sum(len(t) for _, t, _ in batches) == 20
    assert not cache._queue  # every bag read ahead was used
    cache.close()
