"""Survival losses, checked against lifelines, scikit-survival and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from scipy.optimize import minimize
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from mil_crcrs.errors import InputError
from mil_crcrs.train.losses import LOSSES, cox_nll, discrete_time_nll, make_time_bins


def numpy_cox_nll(risk, time, event, ties):
    """Reference: the textbook formula, one distinct event time at a time, in float64."""
    risk, time, event = (np.asarray(a, dtype=np.float64) for a in (risk, time, event))
    log_lik = 0.0
    for t in np.unique(time[event == 1]):
        tied = (time == t) & (event == 1)
        d = tied.sum()
        at_risk = np.exp(risk[time >= t]).sum()
        tied_sum = np.exp(risk[tied]).sum()
        log_lik += risk[tied].sum()
        for k in range(d):
            frac = k / d if ties == "efron" else 0.0
            log_lik -= np.log(at_risk - frac * tied_sum)
    return -log_lik / event.sum()


def tied_cohort(n=60, seed=0):
    """One covariate, times rounded to whole months so that many are tied; ~70% events."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    time = np.ceil(rng.exponential(scale=12 * np.exp(-0.8 * x)))
    event = (rng.random(n) < 0.7).astype(np.int64)
    return x, time, event


def fit_beta(x, time, event, ties):
    """The coefficient minimising our loss (scipy BFGS on our loss and its autograd gradient)."""
    xt = torch.as_tensor(x)

    def loss_and_grad(beta):
        b = torch.tensor(beta[0], dtype=torch.float64, requires_grad=True)
        loss = cox_nll(b * xt, time, event, ties=ties)
        loss.backward()
        return loss.item(), np.array([b.grad.item()])

    result = minimize(loss_and_grad, x0=np.zeros(1), jac=True, method="BFGS", tol=1e-12)
    assert abs(result.jac[0]) < 1e-8  # a stationary point (BFGS may stop at float precision)
    return result.x[0]


def test_cox_hand_case():
    # Times 1, 2, 2, 2(censored), 3; events at 1, two tied at 2, and 3. With w = exp(risk):
    # Breslow: -(r0 - log W) - (r1 + r2 - 2 log R) - (r4 - log w4), R = w1 + w2 + w3 + w4
    # Efron replaces 2 log R by log R + log(R - (w1 + w2) / 2). Divided by 4 events.
    r = np.array([0.5, -0.2, 1.0, 0.3, 0.0])
    w = np.exp(r)
    big_r = w[1:].sum()
    common = -(r[0] - np.log(w.sum())) - (r[1] + r[2]) - (r[4] - np.log(w[4]))
    breslow = (common + 2 * np.log(big_r)) / 4
    efron = (common + np.log(big_r) + np.log(big_r - (w[1] + w[2]) / 2)) / 4
    args = (torch.tensor(r), [1.0, 2, 2, 2, 3], [1, 1, 1, 0, 1])
    assert cox_nll(*args, ties="breslow").item() == pytest.approx(breslow, rel=1e-12)
    assert cox_nll(*args, ties="efron").item() == pytest.approx(efron, rel=1e-12)
    assert cox_nll(*args).item() == pytest.approx(efron, rel=1e-12)  # Efron is the default


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_matches_the_textbook_formula(ties):
    x, time, event = tied_cohort()
    risk = 0.7 * x
    expected = numpy_cox_nll(risk, time, event, ties)
    assert cox_nll(torch.tensor(risk), time, event, ties).item() == pytest.approx(expected, 1e-12)
    got32 = cox_nll(torch.tensor(risk, dtype=torch.float32), time, event, ties)
    assert got32.dtype == torch.float32 and got32.item() == pytest.approx(expected, rel=1e-6)


def test_efron_log_likelihood_equals_lifelines_at_its_fitted_coefficient():
    x, time, event = tied_cohort()
    df = pd.DataFrame({"x": x, "time": time, "event": event})
    cph = CoxPHFitter().fit(df, duration_col="time", event_col="event")  # Efron ties
    beta = cph.params_["x"]
    ours = -cox_nll(torch.tensor(beta * x), time, event, ties="efron").item() * event.sum()
    assert ours == pytest.approx(cph.log_likelihood_, rel=1e-8)
    assert fit_beta(x, time, event, "efron") == pytest.approx(beta, abs=1e-4)


def test_breslow_minimiser_equals_scikit_survival_coefficient():
    x, time, event = tied_cohort(seed=1)
    y = Surv.from_arrays(event=event.astype(bool), time=time)
    coef = CoxPHSurvivalAnalysis(ties="breslow").fit(x[:, None], y).coef_[0]
    assert fit_beta(x, time, event, "breslow") == pytest.approx(coef, abs=1e-4)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_gradient_matches_finite_differences(ties):
    gen = torch.Generator().manual_seed(0)
    risk = torch.randn(12, generator=gen, dtype=torch.float64, requires_grad=True)
    time = torch.tensor([1.0, 2, 2, 2, 3, 3, 4, 5, 5, 5, 5, 6])
    event = torch.tensor([1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1])
    assert torch.autograd.gradcheck(lambda r: cox_nll(r, time, event, ties), (risk,))


def test_cox_batch_without_events_is_zero_and_still_backpropagates():
    risk = torch.randn(5, requires_grad=True)
    loss = cox_nll(risk, torch.arange(5.0), torch.zeros(5))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(risk.grad, torch.zeros(5))


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_ignores_batch_order_and_a_common_shift_of_risk(ties):
    x, time, event = tied_cohort(n=30, seed=2)
    risk = torch.tensor(x)
    base = cox_nll(risk, time, event, ties)
    perm = np.random.default_rng(0).permutation(30)
    assert cox_nll(risk[perm], time[perm], event[perm], ties).item() == pytest.approx(base.item())
    assert cox_nll(risk + 50.0, time, event, ties).item() == pytest.approx(base.item())


def test_cox_is_finite_for_extreme_risks():
    # exp(+-1000) overflows float64; the loss works in log space.
    risk = torch.tensor([1000.0, -1000.0, 0.0, 500.0], requires_grad=True)
    loss = cox_nll(risk, [4.0, 1.0, 2.0, 3.0], [1, 1, 1, 1])
    loss.backward()
    # Each event's term is log(sum exp(risk set)) - risk, and the largest risk in its set wins:
    # at t=1: 1000 - (-1000); t=2: 1000 - 0; t=3: 1000 - 500; t=4: 1000 - 1000.
    assert loss.item() == pytest.approx((2000.0 + 1000.0 + 500.0 + 0.0) / 4, rel=1e-6)
    assert torch.all(torch.isfinite(risk.grad))


def test_cox_rejects_unknown_ties():
    with pytest.raises(InputError, match="ties='exact'"):
        cox_nll(torch.zeros(3), [1, 2, 3], [1, 1, 1], ties="exact")


def test_discrete_time_hand_case():
    # Edges 0 | 5 | inf. Hazards: h0 = sigmoid(log(1/3)) = 0.25, h1 = sigmoid(0) = 0.5.
    # Bag 1, event at 7 (bin 1): -log(1 - h0) - log(h1).
    # Bag 2, censored at 2 (bin 0, survived it): -log(1 - h0).
    # Bag 3, event at exactly 5 (bin 1, bins are [lo, hi)): same as bag 1.
    logits = torch.tensor([[math.log(1 / 3), 0.0]] * 3, dtype=torch.float64)
    loss = discrete_time_nll(logits, [7.0, 2.0, 5.0], [1, 0, 1], np.array([0.0, 5.0, np.inf]))
    expected = (2 * (-math.log(0.75) - math.log(0.5)) - math.log(0.75)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_discrete_time_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    edges = np.array([0.0, 2.0, 4.0, np.inf])
    time, event = [0.5, 1.0, 2.0, 3.0, 4.5, 9.0], [1, 0, 1, 0, 1, 0]
    assert torch.autograd.gradcheck(lambda lg: discrete_time_nll(lg, time, event, edges), (logits,))


def test_discrete_time_rejects_edges_of_the_wrong_length():
    with pytest.raises(ValueError, match="3 logits per bag need 4 edges"):
        discrete_time_nll(torch.zeros(2, 3), [1.0, 2.0], [1, 0], np.array([0.0, 1.0, np.inf]))


def test_time_bins_hold_equal_numbers_of_events():
    time = np.arange(1.0, 101.0)
    event = np.ones(100, dtype=int)
    edges = make_time_bins(time, event, 4)
    assert edges[0] == 0.0 and edges[-1] == np.inf and edges.shape == (5,)
    np.testing.assert_allclose(edges[1:-1], np.quantile(time, [0.25, 0.5, 0.75]))
    counts = np.histogram(time, bins=edges)[0]
    assert counts.tolist() == [25, 25, 25, 25]


def test_time_bins_use_event_times_only():
    time = np.array([1.0, 2.0, 3.0, 100.0, 200.0])
    event = np.array([1, 1, 1, 0, 0])
    assert make_time_bins(time, event, 2).tolist() == [0.0, 2.0, np.inf]


@pytest.mark.parametrize(
    ("time", "event", "n_bins", "match"),
    [
        ([1.0, 2.0], [0, 0], 2, "no events"),
        ([1.0, 1.0, 1.0, 2.0], [1, 1, 1, 1], 3, "use fewer bins"),
        ([1.0, 2.0], [1, 1], 0, "n_bins"),
    ],
)
def test_time_bins_bad_input(time, event, n_bins, match):
    with pytest.raises(InputError, match=match):
        make_time_bins(np.array(time), np.array(event), n_bins)


def test_losses_registry_names_both_losses():
    assert LOSSES == {"cox": cox_nll, "discrete_time": discrete_time_nll}
