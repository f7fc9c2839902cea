"""The memory-bounded (chunked, checkpointed) forward pass equals the plain one."""

from __future__ import annotations

import pytest
import torch

from mil_crcrs.errors import SettingError
from mil_crcrs.models import create_model, list_models
from mil_crcrs.train.losses import cox_nll
from mil_crcrs.train.settings import FitSettings, training_autocast
from tests.test_models import IN_DIM, SMALL

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float64 padded batch with large junk on the padding, and its grid."""
    gen = torch.Generator().manual_seed(seed)
    n_max = max(lengths)
    features = torch.randn(len(lengths), n_max, IN_DIM, generator=gen, dtype=torch.float64)
    mask = torch.arange(n_max)[None] < torch.tensor(lengths)[:, None]
    features = torch.where(mask[..., None], features, 1e3)
    i = torch.arange(n_max)
    grid = torch.stack([i % 7, i // 7], dim=-1).expand(len(lengths), n_max, 2).contiguous()
    return features, mask, grid


def _run(model, features, mask, grid):
    """Risk, attention and the gradients of a Cox loss over the batch."""
    model.zero_grad(set_to_none=True)
    out = model(features, mask=mask, grid=grid)
    time = torch.arange(1, len(out.risk) + 1, dtype=out.risk.dtype, device=out.risk.device)
    event = torch.ones_like(time)
    loss = cox_nll(out.risk, time, event) + out.attention.pow(2).sum()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return out.risk.detach(), out.attention.detach(), grads


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("lengths", [[50, 23, 37], [61]])
def test_chunked_step_equals_the_plain_step_in_float64(name, lengths):
    torch.manual_seed(0)
    model = create_model(name, in_dim=IN_DIM, dropout=0.0, **SMALL[name]).double().train()
    features, mask, grid = _batch(lengths)
    model.max_step_tiles = None
    risk, attention, grads = _run(model, features, mask, grid)
    model.max_step_tiles, model.tile_chunk = 8, 9  # chunks cut across bags
    risk_c, attention_c, grads_c = _run(model, features, mask, grid)
    torch.testing.assert_close(risk_c, risk, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(attention_c, attention, rtol=1e-12, atol=1e-12)
    assert grads_c.keys() == grads.keys() and grads
    for key, grad in grads.items():
        torch.testing.assert_close(grads_c[key], grad, rtol=1e-10, atol=1e-12, msg=key)


def test_chunked_abmil_keeps_dropout_consistent_between_forward_and_recomputation():
    """With dropout on, the recomputed chunk must see the same masks as its forward pass: the
    gradient then equals a finite difference of the same (seeded) forward pass."""
    torch.manual_seed(0)
    model = create_model("abmil", in_dim=IN_DIM, dropout=0.5, **SMALL["abmil"]).double().train()
    model.max_step_tiles, model.tile_chunk = 8, 9
    features, mask, grid = _batch([40, 30])
    param = model.head.bias

    def loss_at(value: float) -> torch.Tensor:
        with torch.no_grad():
            param.fill_(value)
        torch.manual_seed(5)
        return model(features, mask=mask, grid=grid).risk.sum()

    loss = loss_at(0.3)
    loss.backward()
    # d(sum risk)/d(head bias) = number of bags; the check that matters is on the MLP weight.
    assert param.grad.item() == pytest.approx(2.0)
    weight = model.mlp[0].weight
    model.zero_grad(set_to_none=True)
    loss_at(0.3).backward()
    eps = 1e-6
    with torch.no_grad():
        weight[0, 0] += eps
    up = loss_at(0.3).item()
    with torch.no_grad():
        weight[0, 0] -= 2 * eps
    down = loss_at(0.3).item()
    assert weight.grad[0, 0].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def test_chunking_applies_only_above_the_budget(monkeypatch):
    import mil_crcrs.models._base as base

    calls = []
    real = base.forward_chunked
    monkeypatch.setattr(base, "forward_chunked", lambda *a: calls.append(1) or real(*a))
    model = create_model("abmil", in_dim=IN_DIM, **SMALL["abmil"])
    features, mask, grid = _batch([20, 10])
    model.max_step_tiles = 30
    model(features.float(), mask=mask, grid=grid)
    assert calls == []
    model.max_step_tiles = 29
    model(features.float(), mask=mask, grid=grid)
    assert calls == [1]


def test_bf16_autocast_applies_in_training_only():
    model = create_model("abmil", in_dim=IN_DIM, **SMALL["abmil"])
    model.autocast_dtype = torch.bfloat16
    features, mask, grid = _batch([20, 10])
    features = features.float()
    out = model.train()(features, mask=mask, grid=grid)
    assert out.risk.dtype == torch.float32 and torch.isfinite(out.risk).all()
    model.eval()
    plain = model(features, mask=mask, grid=grid).risk
    model.autocast_dtype = None
    torch.testing.assert_close(plain, model(features, mask=mask, grid=grid).risk, rtol=0, atol=0)


def test_auto_precision_is_bf16_on_a_bf16_gpu_and_full_precision_elsewhere(monkeypatch):
    assert FitSettings().precision == "auto"
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert training_autocast("auto", cpu) is None
    assert training_autocast("bf16", cpu) is torch.bfloat16
    assert training_autocast("fp32", gpu) is None
    for supported, expected in [(True, torch.bfloat16), (False, None)]:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert training_autocast("auto", gpu) is expected
    with pytest.raises(SettingError, match="precision"):
        FitSettings(precision="fp16")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chunked_step_equals_the_plain_step_on_cuda():
    torch.manual_seed(0)
    model = create_model("abmil", in_dim=IN_DIM, dropout=0.0, **SMALL["abmil"]).cuda().train()
    features, mask, grid = (t.cuda() for t in _batch([500, 230, 370]))
    model.max_step_tiles = None
    risk, attention, grads = _run(model, features.float(), mask, grid)
    model.max_step_tiles, model.tile_chunk = 100, 97
    risk_c, attention_c, grads_c = _run(model, features.float(), mask, grid)
    torch.testing.assert_close(risk_c, risk, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(attention_c, attention, rtol=1e-4, atol=1e-6)
    for key, grad in grads.items():
        torch.testing.assert_close(grads_c[key], grad, rtol=1e-3, atol=1e-5, msg=key)
