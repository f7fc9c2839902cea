"""The aggregators: invariants every registered model keeps, and what each one promises."""

from __future__ import annotations

import json

import pytest
import torch

from mil_crcrs.errors import InputError
from mil_crcrs.models import (
    MILModel,
    MILOutput,
    create_model,
    list_models,
    register_model,
    risk_from_logits,
)
from mil_crcrs.models.transmil import NystromAttention, iterative_pinv, tile_layout
from mil_crcrs.train.losses import cox_nll

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

IN_DIM = 12
# Small widths so every test runs in well under a second on a CPU. transmil's 8 landmarks make
# bags of more than 7 tiles go through the Nystrom approximation.
SMALL = {
    "abmil": {"hidden_dim": 16, "attn_dim": 8},
    "mean": {"hidden_dim": 16},
    "max": {"hidden_dim": 16},
    "transmil": {"dim": 16, "heads": 4, "n_landmarks": 8},
}
MODELS = list_models()


def small_model(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, in_dim=IN_DIM, **{**SMALL[name], **kwargs})


def make_bag(n: int, seed: int = 1, cols: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, n, IN_DIM) features and (1, n, 2) grid positions, ``cols`` tiles per row."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(1, n, IN_DIM, generator=gen)
    i = torch.arange(n)
    grid = torch.stack([i % cols, i // cols], dim=-1)[None]
    return features, grid


def pad(features, grid, n_total: int, seed: int = 2):
    """Pad one bag to ``n_total`` rows of garbage (large random features, random grid cells)."""
    gen = torch.Generator().manual_seed(seed)
    n = features.shape[1]
    junk = 100 * torch.randn(1, n_total - n, IN_DIM, generator=gen)
    junk_grid = torch.randint(0, 1000, (1, n_total - n, 2), generator=gen)
    mask = torch.arange(n_total)[None] < n
    return torch.cat([features, junk], 1), mask, torch.cat([grid, junk_grid], 1)


def test_every_registered_model_is_covered_here():
    assert set(MODELS) == set(SMALL) == {"abmil", "mean", "max", "transmil"}


@pytest.mark.parametrize("name", MODELS)
def test_defaults_build_and_return_risk_logits_attention(name):
    model = create_model(name, in_dim=32).eval()
    features, grid = make_bag(5)
    out = model(torch.randn(2, 5, 32), grid=grid.expand(2, -1, -1))
    assert isinstance(out, MILOutput)
    assert out.risk.shape == (2,) and out.logits.shape == (2, 1) and out.attention.shape == (2, 5)
    assert torch.equal(out.risk, out.logits[:, 0])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("n", [1, 5, 37])
def test_padding_does_not_change_the_result(name, n):
    model = small_model(name).eval()
    features, grid = make_bag(n)
    alone = model(features, grid=grid)
    padded = model(*pad(features, grid, n + 11))
    torch.testing.assert_close(padded.risk, alone.risk, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.attention[:, :n], alone.attention, atol=1e-6, rtol=1e-5)
    assert torch.all(padded.attention[:, n:] == 0)


@pytest.mark.parametrize("name", MODELS)
def test_other_bags_in_the_batch_do_not_change_a_bags_result(name):
    model = small_model(name).eval()
    bags = [make_bag(n, seed=n, cols=c) for n, c in [(9, 3), (40, 8), (1, 1)]]
    n_max = max(f.shape[1] for f, _ in bags)
    padded = [pad(f, g, n_max) for f, g in bags]
    features, mask, grid = (torch.cat(parts) for parts in zip(*padded, strict=True))
    batch = model(features, mask, grid)
    for i, (f, g) in enumerate(bags):
        alone = model(f, grid=g)
        torch.testing.assert_close(batch.risk[i : i + 1], alone.risk, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_a_padded_batch_gives_each_bag_its_own_risk_attention_and_gradients(name):
    # In float64, so that the batch and the bags alone agree to rounding. The loss weighs each
    # bag differently: its gradient is the weighted sum of the bags' own gradients.
    model = small_model(name).double().eval()
    bags = [make_bag(n, seed=n, cols=c) for n, c in [(9, 3), (40, 8), (1, 1)]]
    padded = [pad(f.double(), g, 40) for f, g in bags]
    features, mask, grid = (torch.cat(parts) for parts in zip(*padded, strict=True))
    features.requires_grad_(True)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    batch = model(features, mask, grid)
    (weights * batch.risk).sum().backward()
    batch_grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    for i, (f, g) in enumerate(bags):
        n = f.shape[1]
        alone_features = f.double().requires_grad_(True)
        alone = model(alone_features, grid=g)
        (weights[i] * alone.risk).sum().backward()
        torch.testing.assert_close(batch.risk[i : i + 1], alone.risk)
        torch.testing.assert_close(batch.attention[i : i + 1, :n], alone.attention)
        assert torch.all(batch.attention[i, n:] == 0)
        torch.testing.assert_close(features.grad[i : i + 1, :n], alone_features.grad)
        assert torch.all(features.grad[i, n:] == 0)
    for pname, param in model.named_parameters():
        torch.testing.assert_close(batch_grads[pname], param.grad, msg=pname)


@pytest.mark.parametrize("name", MODELS)
def test_the_per_tile_transform_never_sees_padding(name):
    model = small_model(name).eval()
    bags = [make_bag(n, seed=n) for n in (3, 10)]
    padded = [pad(f, g, 10) for f, g in bags]
    features, mask, grid = (torch.cat(parts) for parts in zip(*padded, strict=True))
    features = features.masked_fill(~mask[..., None], float("nan"))
    seen = []
    transform = model.forward_features
    model.forward_features = lambda x: seen.append(tuple(x.shape)) or transform(x)
    out = model(features, mask, grid)
    assert seen == [(13, IN_DIM)]  # the 3 + 10 real tiles, packed
    assert torch.all(torch.isfinite(out.risk)) and torch.all(torch.isfinite(out.attention))
    assert torch.all(out.attention[~mask] == 0)


def test_abmil_scores_only_the_real_tiles():
    model = small_model("abmil").eval()
    features, mask, _ = pad(*make_bag(5), 12)
    seen = []
    model.attention_vu.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape))
    model(features, mask)
    assert seen == [(5, SMALL["abmil"]["hidden_dim"])]


@pytest.mark.parametrize("name", MODELS)
def test_tile_order_does_not_change_the_result(name):
    # transmil orders tokens by grid position itself, so with a grid (one tile per cell) it does
    # not depend on the input order either; the pooling models ignore the grid.
    model = small_model(name).eval()
    features, grid = make_bag(30)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(3))
    out = model(features, grid=grid)
    shuffled = model(features[:, perm], grid=grid[:, perm])
    torch.testing.assert_close(shuffled.risk, out.risk, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled.attention, out.attention[:, perm], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["abmil", "mean", "max"])
def test_tile_order_does_not_matter_without_a_grid(name):
    model = small_model(name).eval()
    features, _ = make_bag(30)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model(features[:, perm]).risk, model(features).risk)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("train", [False, True])
def test_attention_sums_to_one_over_real_tiles_and_is_zero_on_padding(name, train):
    model = small_model(name).train(train)
    bags = [pad(*make_bag(n, seed=n), 25) for n in (1, 7, 25)]
    features, mask, grid = (torch.cat(parts) for parts in zip(*bags, strict=True))
    attention = model(features, mask, grid).attention
    assert torch.all(attention >= 0)
    assert torch.all(attention[~mask] == 0)
    torch.testing.assert_close(attention.sum(1), torch.ones(3))


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_finite_gradient(name):
    model = small_model(name).train()
    bags = [pad(*make_bag(n, seed=n), 30) for n in (1, 8, 30, 17)]
    features, mask, grid = (torch.cat(parts) for parts in zip(*bags, strict=True))
    out = model(features, mask, grid)
    # The Cox loss does not move when all risks shift, so it leaves head.bias without gradient;
    # a second term reaches it.
    loss = cox_nll(out.risk, torch.tensor([3.0, 1.0, 2.0, 2.0]), torch.tensor([1, 1, 0, 1]))
    loss = loss + out.risk.square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.all(torch.isfinite(param.grad)), pname
        assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", MODELS)
def test_no_nan_on_awkward_bags(name):
    model = small_model(name).train()
    constant = torch.ones(1, 6, IN_DIM)  # every tile equal: ties for max pooling
    huge = 1e4 * make_bag(6)[0]
    features = torch.cat([constant, huge])
    features.requires_grad_(True)
    out = model(features)
    out.risk.sum().backward()
    for tensor in (*out, features.grad):
        assert torch.all(torch.isfinite(tensor))


@pytest.mark.parametrize("name", MODELS)
def test_config_round_trip_rebuilds_the_same_model(name):
    model = small_model(name, dropout=0.1).eval()
    config = model.config
    assert config["name"] == name and config["in_dim"] == IN_DIM and config["dropout"] == 0.1
    rebuilt = create_model(**json.loads(json.dumps(config)))
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    assert rebuilt.config == config
    features, grid = make_bag(10)
    torch.testing.assert_close(rebuilt(features, grid=grid).risk, model(features, grid=grid).risk)


def test_unknown_model_name_is_an_input_error_naming_the_known_ones():
    with pytest.raises(InputError, match="unknown model 'clam'.*abmil, max, mean, transmil"):
        create_model("clam", in_dim=4)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("abmil", {"in_dim": 4, "depth": 2}, "depth"),
        ("abmil", {"in_dim": 0}, "in_dim"),
        ("mean", {"in_dim": 4, "dropout": 1.0}, "dropout"),
        ("transmil", {"in_dim": 4, "dim": 30, "heads": 8}, "multiple of heads"),
    ],
)
def test_bad_hyperparameters_are_input_errors(name, kwargs, match):
    with pytest.raises(InputError, match=match):
        create_model(name, **kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_tile_contributions_plus_head_bias_sum_to_the_risk(name):
    # Exact for abmil and mean (linear head on an attention-weighted mean) and for max (each
    # channel credited to the tile holding its maximum); for transmil exact at the bag's own
    # LayerNorm scale.
    model = small_model(name).eval()
    bags = [pad(*make_bag(n, seed=n), 20) for n in (20, 3)]
    features, mask, grid = (torch.cat(parts) for parts in zip(*bags, strict=True))
    contributions = model.tile_contributions(features, mask, grid)
    assert contributions.shape == (2, 20)
    assert torch.all(contributions[~mask] == 0)
    risk = model(features, mask, grid).risk
    torch.testing.assert_close(contributions.sum(1) + model.head.bias, risk)


def test_abmil_contribution_is_attention_times_the_tiles_head_value():
    model = small_model("abmil").eval()
    features, _ = make_bag(8)
    out = model(features)
    h = model.forward_features(features)
    expected = out.attention * (h @ model.head.weight.T)[..., 0]
    torch.testing.assert_close(model.tile_contributions(features), expected)


def test_mean_attention_is_uniform_and_max_attention_counts_argmax_channels():
    features, _ = make_bag(4)
    mean_model = small_model("mean").eval()
    torch.testing.assert_close(mean_model(features).attention, torch.full((1, 4), 0.25))
    max_model = small_model("max").eval()
    h = max_model.forward_features(features)[0]  # (4, 16)
    # Channels where every tile ties (e.g. all zero after the ReLU) are split evenly.
    holds = (h == h.max(0).values).float()
    expected = (holds / holds.sum(0)).mean(1)
    torch.testing.assert_close(max_model(features).attention[0], expected)


@pytest.mark.parametrize("name", MODELS)
def test_discrete_time_outputs_give_the_log_cumulative_hazard(name):
    model = small_model(name, n_outputs=4).eval()
    features, grid = make_bag(9)
    out = model(features, grid=grid)
    assert out.logits.shape == (1, 4)
    hazards = torch.sigmoid(out.logits.double())
    survival_at_last_bin = torch.prod(1 - hazards, dim=1)
    torch.testing.assert_close(out.risk.double(), torch.log(-torch.log(survival_at_last_bin)))
    assert torch.all(torch.isfinite(model.tile_contributions(features, grid=grid)))


def test_risk_from_logits_stays_finite_for_very_negative_logits():
    logits = torch.tensor([[-80.0, -90.0, -100.0]], requires_grad=True)
    risk = risk_from_logits(logits)
    # softplus(x) ~ exp(x) there, so the risk is logsumexp of the logits.
    torch.testing.assert_close(risk, torch.logsumexp(logits, 1))
    risk.sum().backward()
    assert torch.all(torch.isfinite(logits.grad))


def test_features_in_float16_are_accepted():
    model = small_model("abmil").eval()
    features, _ = make_bag(5)
    torch.testing.assert_close(model(features.half()).risk, model(features.half().float()).risk)


def test_wrong_feature_dim_is_refused():
    with pytest.raises(ValueError, match=f"features must be \\(batch, tiles, {IN_DIM}\\)"):
        small_model("abmil")(torch.randn(1, 5, IN_DIM + 1))


# -- transmil's parts -----------------------------------------------------------------------------


def test_iterative_pinv_matches_the_svd_pseudo_inverse():
    gen = torch.Generator().manual_seed(5)
    a = torch.softmax(3 * torch.randn(2, 6, 6, generator=gen, dtype=torch.float64), -1)
    torch.testing.assert_close(iterative_pinv(a, 30), torch.linalg.pinv(a), atol=1e-8, rtol=1e-6)


def test_nystrom_attention_is_exact_softmax_attention_when_every_token_is_a_landmark():
    torch.manual_seed(6)
    attn = NystromAttention(dim=16, heads=4, n_landmarks=32, pinv_iterations=40, dropout=0.0)
    attn = attn.double().eval()
    with torch.no_grad():
        attn.qkv.weight.mul_(3)  # sharper softmax rows: a well-conditioned landmark kernel
    x = torch.randn(1, 20, 16, dtype=torch.float64)
    mask = torch.ones(1, 20, dtype=torch.bool)
    out = attn(x, mask, torch.arange(20)[None])
    q, k, v = (t.view(1, 20, 4, 4).transpose(1, 2) for t in attn.qkv(x).chunk(3, -1))
    exact = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
    exact = attn.out(exact.transpose(1, 2).reshape(1, 20, 16))
    torch.testing.assert_close(out, exact, atol=1e-6, rtol=1e-6)


def test_tile_layout_uses_the_grid_and_falls_back_to_a_square_when_sparse():
    mask = torch.ones(2, 4, dtype=torch.bool)
    dense = torch.tensor([[5, 7], [6, 7], [5, 8], [6, 8]])
    sparse = torch.tensor([[0, 0], [10**12, 0], [0, 10**12], [10**12, 10**12]])
    cells, rank = tile_layout(mask, torch.stack([dense.flip(0), sparse]))
    assert cells[0].tolist() == [[1, 1], [0, 1], [1, 0], [0, 0]]  # shifted to the origin
    assert rank[0].tolist() == [3, 2, 1, 0]  # row-major order on the grid
    assert cells[1].tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]  # 2x2 square, input order
    assert rank[1].tolist() == [0, 1, 2, 3]


def test_transmil_sees_the_grid():
    model = small_model("transmil").eval()
    features, grid = make_bag(12, cols=4)
    other = make_bag(12, cols=3)[1]
    assert not torch.allclose(model(features, grid=grid).risk, model(features, grid=other).risk)


def test_transmil_handles_one_tile_and_twenty_thousand_tiles():
    model = small_model("transmil", n_landmarks=64).eval()
    features, grid = make_bag(20_000, cols=150)
    with torch.no_grad():
        one = model(features[:, :1])
        many = model(features, grid=grid)
    for out in (one, many):
        assert torch.all(torch.isfinite(out.risk))
        torch.testing.assert_close(out.attention.sum(1), torch.ones(1))


def test_registering_a_taken_name_is_refused_and_keeps_the_first():
    before = create_model("mean", in_dim=4)

    class Impostor(MILModel):
        pass

    with pytest.raises(ValueError, match="'mean' is already registered"):
        register_model("mean")(Impostor)
    assert type(create_model("mean", in_dim=4)) is type(before)
